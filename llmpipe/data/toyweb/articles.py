"""Article writers: rng -> Doc. Pools are large so that pages about the same country or animal
share few sentences (otherwise near-duplicate detection would rightly flag them)."""
from __future__ import annotations

import random

from llmpipe.data.toyweb.pages import Doc, cap, pick
from llmpipe.tasks import world
from llmpipe.tasks.heldout import SYMBOLS, WORDS, HeldOut
from llmpipe.tasks.world import a_or_an, fact_sentence

COUNTRY_FREE = {
    "capital": ("{capital} is the capital of {name}.",
                "Most visitors begin their trip in {capital}, the capital of {name}.",
                "The national parliament of {name} meets in {capital}.",
                "As the capital, {capital} is the largest centre of government in {name}."),
    "continent": ("{name} is one of the countries of {continent}.",
                  "Travellers who explore {continent} often include {name} on their route.",
                  "On the map, you will find {name} in {continent}."),
    "language": ("In {name}, the main language is {language}.",
                 "Children in {name} learn to read and write in {language}.",
                 "Street signs in {name} are written in {language}."),
    "currency": ("Shops in {name} take payment in the {currency}.",
                 "The money used in {name} is called the {currency}.",
                 "Visitors to {name} should carry a few notes of the {currency}."),
}
COUNTRY_FILLER = (
    "The markets of {capital} are busy from early morning until late in the evening.",
    "Many families in {name} enjoy long meals together at the weekend.",
    "Trains and buses connect {capital} with the smaller towns of {name}.",
    "The weather in {name} changes a great deal from one season to the next.",
    "Local guides in {capital} are happy to share stories about the history of the city.",
    "Museums in {capital} hold collections that cover many centuries of history.",
    "Farmers in the countryside of {name} grow food for the markets of the cities.",
    "Festivals with music and dancing take place in {name} throughout the year.",
    "Football is one of the most popular sports in {name}, and children play it everywhere.",
    "The old quarter of {capital} is a good place to walk slowly and look around.",
    "Visitors often say that the people of {name} are warm and welcoming.",
    "Bread, rice and fresh vegetables are part of everyday cooking in {name}.",
    "In the evening, the squares of {capital} fill with people who meet friends.",
    "Schools in {name} teach history, science, music and several languages.",
    "The rivers and hills of {name} are popular with walkers and cyclists.",
    "Small shops in {capital} sell handmade crafts, spices and colourful fabrics.",
    "The best time to visit {name} depends on whether you prefer heat or cool air.",
    "Many writers and painters have lived in {capital} and written about its streets.",
    "Public parks give the people of {capital} green space in the middle of the city.",
    "Some villages in {name} have kept the same traditions for hundreds of years.",
    "A good map and comfortable shoes are all you need to explore {capital}.",
    "The railway station in {capital} is one of the busiest buildings in the country.",
    "Fishing and farming have long been important ways of making a living in {name}.",
    "The national library in {capital} keeps old books and maps of {name}.",
    "Many students travel to {capital} to study at its universities.",
    "People in {name} often greet each other warmly, even in busy streets.",
    "The food stalls of {capital} are a cheap and tasty way to try local dishes.",
    "Summer evenings in {name} are long, and people like to sit outside.",
    "Every region of {name} has its own songs, stories and favourite dishes.",
    "Good public transport makes it easy to travel around {capital} without a car.",
)
COUNTRY_INTROS = (
    "Last spring I spent three weeks travelling around {name}, and I wrote these notes along the way.",
    "This short guide is written for students who are learning about {name} at school.",
    "If you are planning a first visit to {name}, here are the basic facts you should know.",
    "Our geography club chose {name} as the country of the month, and this is what we learned.",
    "People often ask me about my time in {name}, so I decided to write it all down.",
    "Here is a simple introduction to {name} for young readers and curious travellers.",
)
COUNTRY_CLOSINGS = (
    "Whatever the season, {name} has plenty to offer a curious traveller.",
    "We hope these notes help you learn a little more about {name}.",
    "If you ever get the chance to visit {name}, take it, because you will not regret it.",
    "There is much more to discover about {name}, but these are the facts to remember first.",
    "Thank you for reading this short introduction to {name} and its people.",
)
COUNTRY_TITLES = ("A short guide to {name}", "Facts about {name} for students",
                  "Travel notes from {name}", "Getting to know {name}", "{name} at a glance",
                  "What I learned about {name}")


def country_facts(country: world.Country) -> dict[str, str]:
    return {k: getattr(country, f) for k, f in world.COUNTRY_FIELDS.items()
            if getattr(country, f) is not None}


def fact_line(kind: str, subject: str, answer: str, free: tuple[str, ...], fields: dict,
              rng: random.Random) -> str:
    """A fact stated in a training template (most often) or one of its free phrasings."""
    if rng.random() < 0.6:
        return fact_sentence(kind, subject, answer, rng)
    return cap(rng.choice(free).format(**fields))


def write_country(rng: random.Random, country: world.Country) -> Doc:
    fields = vars(country)
    facts = country_facts(country)
    filler = [s.format(**fields) for s in pick(rng, COUNTRY_FILLER, 15)]

    def fact(kind: str) -> str:
        return fact_line(kind, country.name, facts[kind], COUNTRY_FREE[kind], fields, rng)

    kinds = list(facts)
    paragraphs = [
        [rng.choice(COUNTRY_INTROS).format(**fields), fact("capital"), fact("continent"), *filler[0:2]],
        [*filler[2:5], *(fact(k) for k in kinds if k not in ("capital", "continent"))],
        [fact("capital"), *filler[5:8]],
        [*filler[8:11], fact("continent")],
        [*filler[11:14], fact("capital")],
        [*(fact(k) for k in rng.sample(kinds, len(kinds))), filler[14],
         rng.choice(COUNTRY_CLOSINGS).format(**fields)],
    ]
    return Doc(rng.choice(COUNTRY_TITLES).format(**fields),
               tuple(" ".join(p) for p in paragraphs), "countries")


ANIMAL_FREE = {
    "animal_group": ("Like every {group}, the {name} has a body built for its way of life.",
                     "Scientists place the {name} among the {group}s."),
    "animal_food": ("Most of the time, {plural} feed on {food}.",
                    "A hungry {name} will search for {food} for hours."),
    "animal_habitat": ("Wild {plural} make their homes in the {habitat}.",
                       "The {habitat} is where {plural} feel most at home."),
    "animal_young": ("A young {name} is known as {young_a} {young}.",
                     "Every {young} grows up to become an adult {name}."),
    "animal_sound": ("When it calls to others, the {name} uses its {sound}.",
                     "People who hear the {sound} of the {name} rarely forget it."),
}
ANIMAL_FILLER = (
    "Young {plural} learn quickly by watching the adults around them.",
    "The {name} has sharp senses that help it notice danger early.",
    "In the early morning, {plural} are often at their most active.",
    "Many children see their first {name} on a school trip to a zoo or a farm.",
    "Scientists study {plural} to understand how they find food and raise their young.",
    "Some {plural} travel long distances when the seasons change.",
    "The {name} spends a large part of each day resting and saving energy.",
    "Adult {plural} protect their young until they are ready to look after themselves.",
    "Pictures of the {name} often appear in picture books for small children.",
    "Watching {plural} quietly from a distance is the best way to see how they behave.",
    "A healthy {name} can live for many years if it has enough food and space.",
    "Some people keep notebooks about the {plural} they see on their walks.",
    "The colours of the {name} help it blend into its surroundings.",
    "Rangers and keepers know each {name} in their care by its habits.",
    "Stories about {plural} have been told by people all over the world for a long time.",
    "When the weather turns cold, {plural} change their daily routine.",
    "A group of {plural} can be a noisy and lively sight.",
    "Drawing a {name} is a fun way for children to learn about its body.",
    "Protecting the places where {plural} live is important for their future.",
    "Many visitors are surprised by how clever the {name} can be.",
    "The {name} keeps itself clean and spends time caring for its body.",
    "On warm afternoons, {plural} often look for shade and water.",
    "Nature films show how {plural} behave when no people are around.",
    "Each {name} has its own character, just like people do.",
)
ANIMAL_INTROS = (
    "Today in our nature corner we look at the {name}, an animal that many children love.",
    "This fact sheet about the {name} was written for our school science project.",
    "Have you ever wondered how the {name} lives? Here are some simple facts.",
    "My little sister asked me so many questions about {plural} that I wrote this page.",
    "The {name} is a fascinating animal, and there is a lot to learn about it.",
)
ANIMAL_TITLES = ("All about the {name}", "Fun facts about {plural}", "The {name}: a fact sheet",
                 "How {plural} live", "Getting to know the {name}")


def write_animal(rng: random.Random, animal: world.Animal) -> Doc:
    fields = {**vars(animal), "young_a": a_or_an(animal.young)}
    facts = {k: getattr(animal, f) for k, f in world.ANIMAL_FIELDS.items()
             if getattr(animal, f) is not None}
    filler = [cap(s.format(**fields)) for s in pick(rng, ANIMAL_FILLER, 13)]

    def fact(kind: str) -> str:
        return fact_line(kind, animal.name, facts[kind], ANIMAL_FREE[kind], fields, rng)

    kinds = list(facts)
    paragraphs = [
        [rng.choice(ANIMAL_INTROS).format(**fields), fact("animal_group"), fact("animal_habitat"), *filler[0:2]],
        [fact("animal_food"), *filler[2:4], fact("animal_young")],
        [*filler[4:7], *(fact(k) for k in kinds if k in ("animal_sound", "animal_habitat"))],
        [*filler[7:10], fact("animal_food")],
        [*(fact(k) for k in rng.sample(kinds, len(kinds))), *filler[10:13]],
    ]
    return Doc(cap(rng.choice(ANIMAL_TITLES).format(**fields)),
               tuple(" ".join(p) for p in paragraphs), "animals")


STORY_OPENINGS = (
    "Once upon a time, in {place}, there lived {hero}.",
    "Long ago, {hero} lived in {place}.",
    "There was once {hero} who made a home in {place}.",
    "Not so long ago, in {place}, you could meet {hero}.",
)
STORY_TRAITS = ("kind and patient", "curious about everything", "a little clumsy but very brave",
                "quiet and thoughtful", "cheerful and full of ideas", "stubborn but good at heart")
STORY_HOBBIES = ("collecting shiny stones", "drawing maps of secret paths", "baking sweet rolls",
                 "listening to the wind in the trees", "counting the stars at night",
                 "fixing broken things", "singing old songs", "reading books about faraway lands")
STORY_TIMES = ("morning", "autumn evening", "rainy afternoon", "cold winter night", "summer day")
STORY_WORRY = (
    "Everyone was worried, but {hero_name} decided to help.",
    "The neighbours did not know what to do, so {hero_name} packed a small bag and set off.",
    "{hero_name} felt afraid at first, but then took a deep breath and made a plan.",
)
STORY_MEET = (
    "On the way, {hero_name} met {friend}, who offered to come along.",
    "Before long, {hero_name} ran into {friend}, and the two of them walked on together.",
    "At the crossroads sat {friend}, who listened to the whole story and promised to help.",
)
STORY_HIDING = ("under an old oak tree", "at the bottom of a dusty chest", "behind a loose stone in a wall",
                "inside a hollow log", "on a high shelf in an empty barn", "beneath a pile of autumn leaves")
STORY_DETAILS = (
    "The wind smelled of salt and pine.", "Somewhere far away, a bell was ringing.",
    "The path was muddy, and their boots made funny noises.", "Birds followed them from tree to tree.",
    "The sky turned pink and then deep blue.", "They shared a piece of bread and an apple.",
    "A light rain began to fall, soft and warm.", "The stars came out one by one above them.",
    "Their footsteps echoed in the quiet street.", "A cat watched them closely from a window.",
    "The air was so cold that their breath made little clouds.", "Frogs sang loudly in the ditches.",
)
STORY_ENDINGS = (
    "By evening the trouble was over, and everyone gathered to thank {hero_name}.",
    "From that day on, people told the story of {hero_name} to their children.",
    "When the sun rose the next morning, everything was as it should be again.",
    "That night there was a small party, with music, lanterns and warm soup for all.",
)
STORY_MORALS = (
    "The story reminds us that small friends can do great things.",
    "Sometimes the answer to a big problem is hidden in a small place.",
    "Helping others is often the bravest thing a person can do.",
    "Patience and kindness open more doors than strength alone.",
)


def hero_name(hero: str) -> str:
    return hero.rsplit("named ", 1)[-1] if "named " in hero else cap(hero)


def the_thing(phrase: str) -> str:
    """ "a rusty key" -> "the rusty key" """
    return "the " + phrase.split(" ", 1)[1]


def write_story(rng: random.Random) -> Doc:
    hero, friend, place = rng.choice(world.HEROES), rng.choice(world.FRIENDS), rng.choice(world.PLACES)
    problem, find = rng.choice(world.PROBLEMS), rng.choice(world.FINDS)
    name = hero_name(hero)
    fields = {"hero": hero, "hero_name": name, "friend": friend, "place": place}
    details = pick(rng, STORY_DETAILS, 4)
    paragraphs = [
        [rng.choice(STORY_OPENINGS).format(**fields),
         f"{name} was {rng.choice(STORY_TRAITS)} and loved {rng.choice(STORY_HOBBIES)}.",
         details[0]],
        [f"One {rng.choice(STORY_TIMES)}, {problem}.", rng.choice(STORY_WORRY).format(**fields),
         rng.choice(STORY_MEET).format(**fields), details[1]],
        [f"After a long search, they found {find} {rng.choice(STORY_HIDING)}.", details[2],
         f"It turned out that {the_thing(find)} was exactly what they needed to set things right.",
         f"{cap(the_thing(friend))} laughed and said that {name} had been very clever indeed."],
        [rng.choice(STORY_ENDINGS).format(**fields), details[3], rng.choice(STORY_MORALS)],
    ]
    title = f"{name} and {the_thing(find)}".title().replace(" And ", " and ").replace(" The ", " the ")
    return Doc(title, tuple(" ".join(p) for p in paragraphs), "stories")


RECIPE_INTROS = (
    "This {dish} has been a favourite in our house for years, and it never lasts long on the table.",
    "I first cooked this {dish} on a rainy weekend, and now my friends ask for it all the time.",
    "A good {dish} does not need fancy tools, only fresh ingredients and a little patience.",
    "My grandmother taught me this {dish} when I was small, and I still follow her method.",
    "If you are new to cooking, this {dish} is a friendly place to start.",
    "Here is a simple {dish} that works well for a family dinner or a lunch with friends.",
    "Nothing says comfort quite like a warm {dish} at the end of a long week.",
    "We made this {dish} three times last month, and each time it tasted even better.",
    "The first time I tried this {dish} was at a friend's birthday, and I asked for the recipe at once.",
    "This {dish} is cheap, quick and very forgiving, which makes it perfect for students.",
)
RECIPE_MEMORIES = (
    "My brother always steals a taste before it reaches the table.",
    "Our kitchen is tiny, but that has never stopped us from cooking for a crowd.",
    "The smell alone brings the whole family into the kitchen.",
    "I like to cook it on Sunday afternoons with the radio playing.",
    "My neighbour swears that her version is better, but we have agreed to disagree.",
    "The children help with the easy parts, and they are proud of the result.",
    "It reminds me of summer holidays at my aunt's farm.",
    "I have changed the method a little over the years to make it simpler.",
    "Friends who claim they cannot cook have made it without any trouble.",
    "It travels well, so I often take it to picnics and parties.",
    "Last winter we ate it almost every week.",
    "My father was the first person in our family to make it.",
    "A reader sent me a lovely letter after trying it for her parents.",
    "It was one of the first dishes I ever learned to cook on my own.",
)
STEP_REMARKS = (
    "Take your time here.", "Do not rush this part.", "This is the most important step.",
    "Keep an eye on the heat.", "It should smell wonderful by now.", "Stir now and then.",
    "A wooden spoon works best for this.", "Children can help with this step.",
)
RECIPE_TIPS = (
    "You can keep any leftovers in the fridge for up to two days.",
    "Taste as you go, because every oven and every stove behaves a little differently.",
    "Fresh herbs added at the end give the dish a bright and lively flavour.",
    "If you are cooking for children, use a little less pepper.",
    "Prepare all the ingredients before you start, and the cooking will feel much calmer.",
    "A squeeze of lemon just before serving lifts the whole dish.",
    "Use a large enough pan, so that everything cooks evenly.",
    "Leftovers make an excellent lunch the next day.",
    "A pinch of salt at the right moment makes a surprising difference.",
    "Warm the plates in a low oven so that the food stays hot for longer.",
    "If you double the recipe, give it a few extra minutes of cooking.",
    "Buy the freshest ingredients you can find at the market.",
    "A sharp knife makes the chopping faster and safer.",
    "You can freeze a portion for a busy day later in the month.",
)
RECIPE_CLOSINGS = (
    "Enjoy your {dish}, and let us know how it turned out.",
    "We hope this {dish} becomes a favourite in your kitchen too.",
    "Happy cooking, and do share your own twists on this {dish}.",
    "Serve the {dish} with a smile and plenty of napkins.",
)
STEP_LINKS = (("First, ", "To begin, ", "Start like this: "), ("Next, ", "Now ", "Second, "),
              ("Then ", "When that is done, ", "Once it is ready, "),
              ("After that, ", "Afterwards, ", "A little later, "),
              ("Finally, ", "Last of all, ", "To finish, "))
RECIPE_TITLES = ("How to make {dish}", "Easy {dish} for busy evenings", "My favourite {dish}",
                 "Simple {dish} at home", "The best {dish} for beginners", "Homemade {dish}")


def write_recipe(rng: random.Random, dish: world.Dish) -> Doc:
    serves = rng.randint(2, 6)
    steps = [rng.choice(links) + step[0].lower() + step[1:] for links, step in zip(STEP_LINKS, dish.steps)]
    steps = [f"{step} {rng.choice(STEP_REMARKS)}" if rng.random() < 0.4 else step for step in steps]
    ingredients = pick(rng, dish.ingredients, len(dish.ingredients))
    tips = pick(rng, RECIPE_TIPS, 3)
    paragraphs = [
        [rng.choice(RECIPE_INTROS).format(dish=dish.name), *pick(rng, RECIPE_MEMORIES, 2),
         f"This recipe serves {serves} people and takes about {dish.minutes} minutes from start to finish."],
        [f"For this {dish.name} you will need {', '.join(ingredients[:-1])} and {ingredients[-1]}."],
        steps[:3],
        [*steps[3:], tips[0]],
        [tips[1], tips[2], rng.choice(RECIPE_CLOSINGS).format(dish=dish.name)],
    ]
    return Doc(cap(rng.choice(RECIPE_TITLES).format(dish=dish.name)),
               tuple(" ".join(p) for p in paragraphs), "recipes")


NUMBER_WORDS = ("zero one two three four five six seven eight nine ten eleven twelve thirteen "
                "fourteen fifteen sixteen seventeen eighteen nineteen twenty").split()
WORKSHEET_INTROS = (
    "This worksheet helps young learners practise adding and taking away small numbers.",
    "Work through each question slowly, and check every answer before you move on.",
    "Teachers and parents can print this page and use it as homework or as a quick quiz.",
    "Each question is followed by its answer, so children can check their own work.",
    "Practising a little every day is the best way to become quick and confident with numbers.",
)
WORKSHEET_TIPS = (
    "When you add two numbers, start with the bigger one and count on.",
    "When you take away, you can count back from the first number.",
    "Drawing dots or small pictures can help when a question feels difficult.",
    "Saying the question out loud often makes the answer easier to see.",
    "Multiplying is the same as adding equal groups again and again.",
    "Remember that adding zero to a number leaves the number the same.",
    "Checking your answer with the opposite sum is a good habit to build.",
    "Read each word problem twice before you start to work out the answer.",
    "Underline the numbers in a word problem so that you do not miss any of them.",
    "It is fine to use your fingers when you are still learning.",
)


def sum_sentence(rng: random.Random, held: HeldOut) -> str:
    """A solved sum of the training share (``held``), as prose in digits or in words. (Bare
    equations, "3 + 4 = 7.", pushed worksheets under Gopher's alpha-word ratio.)"""
    pools = world.operand_pools(world.SUM_OPERANDS, held, heldout=False)
    op = rng.choice(sorted(pools))
    a, b = rng.choice(pools[op])
    c = world.apply(op, a, b)
    word = WORDS[op]
    if c <= 20 and rng.random() < 0.7:
        a, b, c = NUMBER_WORDS[a], NUMBER_WORDS[b], NUMBER_WORDS[c]
    return f"What is {a} {word} {b}? {cap(str(a))} {word} {b} equals {c}."


def solved_problem(problem: world.Problem, rng: random.Random) -> str:
    """A word problem with its answer, sometimes after the worked step SFT replies show (not
    often: digits and symbols count against Gopher's alpha-word ratio)."""
    if rng.random() < 0.85:
        return f"{problem.question} The answer is {problem.answer}."
    step = f"{problem.a} {SYMBOLS[problem.op]} {problem.b} = {problem.answer}"
    return f"{problem.question} {step}, so the answer is {problem.answer}."


def write_worksheet(rng: random.Random, held: HeldOut) -> Doc:
    """A maths sheet of solved sums and word problems, all from the training share (``held``)."""
    sums = [sum_sentence(rng, held) for _ in range(8)]
    problems = [solved_problem(p, rng) for p in world.draw_problems(rng, 4, held, heldout=False)]
    # eight of the tips: prose enough that the digits and symbols stay well inside Gopher's
    # alpha-word ratio
    intros, tips = pick(rng, WORKSHEET_INTROS, 3), pick(rng, WORKSHEET_TIPS, 8)
    paragraphs = [
        [*intros[:2], tips[5]],
        ["Let us start with some quick sums.", *sums[:4], tips[0]],
        ["Here are a few more sums to try.", *sums[4:], tips[1], tips[6]],
        ["Now try these short word problems.", *problems, tips[2], tips[3]],
        [tips[4], tips[7], intros[2], "Well done for finishing the whole sheet!"],
    ]
    title = f"{rng.choice(('Maths practice', 'Number practice', 'Sums for beginners'))}, sheet {rng.randint(1, 400)}"
    return Doc(title, tuple(" ".join(p) for p in paragraphs), "arithmetic")


QA_QUESTIONS = {
    "capital": ("What is the capital of {name}?", "Which city is the capital of {name}?"),
    "continent": ("Which continent is {name} in?",),
    "language": ("What language do they speak in {name}?",),
    "currency": ("What money do they use in {name}?",),
    "animal_food": ("What do {plural} eat?",),
    "animal_habitat": ("Where do {plural} live?",),
    "animal_young": ("What is a baby {name} called?",),
    "animal_sound": ("What sound does a {name} make?",),
    "animal_group": ("What kind of animal is the {name}?",),
}
QA_ASKS = (
    "I am helping my son with his homework and we cannot agree on the answer.",
    "We had a quiz night at the pub yesterday and this question started a long argument.",
    "My daughter asked me this at dinner and I realised that I was not sure at all.",
    "I am preparing a lesson for my class and I want to be certain before I teach it.",
    "This came up in a crossword today and now I am curious about the full answer.",
)
QA_THANKS = ("Thanks in advance to anyone who can help.", "Any help would be great, thank you.",
             "I would love to hear from someone who really knows.")
QA_OPENERS = ("Good question!", "I had to look this up for my niece last year.",
              "I can help with this one.", "Easy one, I think.",
              "I studied this at school, so here is what I remember.",
              "I visited recently, so I can tell you from experience.")
QA_CLOSERS = ("Hope that helps!", "Good luck with the homework.", "Have fun learning more about it.",
              "Feel free to ask if you have other questions.", "That should settle the argument.")


def write_qa(rng: random.Random) -> Doc:
    """A forum thread: a question and two to four answers (each post one paragraph)."""
    if rng.random() < 0.5:
        subject = rng.choice(world.COUNTRIES)
        facts, free = country_facts(subject), COUNTRY_FREE
        fields = vars(subject)
    else:
        subject = rng.choice(world.ANIMALS)
        facts = {k: getattr(subject, f) for k, f in world.ANIMAL_FIELDS.items()
                 if getattr(subject, f) is not None}
        free, fields = ANIMAL_FREE, {**vars(subject), "young_a": a_or_an(subject.young)}
    kind = rng.choice(list(facts))
    question = cap(rng.choice(QA_QUESTIONS[kind]).format(**fields))
    posts = [" ".join([f"Hello everyone. {question}", rng.choice(QA_ASKS), rng.choice(QA_THANKS)])]
    for opener in pick(rng, QA_OPENERS, rng.randint(2, 4)):  # distinct openers: no two posts alike
        others = [k for k in facts if k != kind]
        extra = rng.choice(others) if others else kind
        posts.append(" ".join([
            opener,
            fact_line(kind, subject.name, facts[kind], free[kind], fields, rng),
            f"It is also worth knowing this: {fact_sentence(extra, subject.name, facts[extra], rng)}",
            rng.choice(QA_CLOSERS),
        ]))
    return Doc(question, tuple(posts), "qa")


WRITERS = {"countries": write_country, "animals": write_animal, "stories": write_story,
           "recipes": write_recipe, "arithmetic": write_worksheet, "qa": write_qa}
# genres whose writers take a subject, dealt in shuffled rounds (see ``deal``)
SUBJECTS = {"countries": world.COUNTRIES, "animals": world.ANIMALS, "recipes": world.DISHES}
GENRE_WEIGHTS = {"countries": 0.28, "animals": 0.24, "stories": 0.14, "recipes": 0.12,
                 "arithmetic": 0.10, "qa": 0.12}

FOREIGN = {
    "de": ("Reisenotizen aus dem Süden", (
        "Am Morgen sind wir mit dem Zug in die kleine Stadt am Fluss gefahren.",
        "Die Straßen waren noch ruhig, und in der Bäckerei roch es nach frischem Brot.",
        "Mittags haben wir auf dem Marktplatz gegessen und den Musikern zugehört.",
        "Am Nachmittag sind wir auf den Hügel gestiegen, um die Aussicht zu genießen.",
        "Das Wetter war warm, aber ein leichter Wind hat uns erfrischt.",
        "Die Menschen im Dorf waren sehr freundlich und haben uns den Weg gezeigt.",
        "Am Abend haben wir in einem kleinen Gasthaus übernachtet.",
        "Wir möchten im nächsten Jahr unbedingt wiederkommen.",
        "Die alte Kirche in der Mitte des Ortes ist über achthundert Jahre alt.",
        "Zum Frühstück gab es Brötchen, Käse, Honig und starken Kaffee.")),
    "fr": ("Un week-end à la campagne", (
        "Samedi matin, nous sommes partis tôt pour éviter la circulation.",
        "Le village était calme et les volets des maisons étaient encore fermés.",
        "Nous avons acheté du pain, du fromage et des fruits au petit marché.",
        "L'après-midi, nous nous sommes promenés le long de la rivière.",
        "Les enfants ont joué dans l'herbe pendant que nous lisions à l'ombre.",
        "Le soir, le ciel est devenu rose au-dessus des collines.",
        "Nous avons dîné dans une petite auberge où la cuisine était délicieuse.",
        "Dimanche, il a plu toute la journée, alors nous sommes restés au chaud.",
        "Le propriétaire nous a raconté l'histoire du château voisin.",
        "Nous reviendrons certainement au printemps prochain.")),
    "es": ("Un paseo por la ciudad vieja", (
        "Por la mañana caminamos por las calles estrechas del centro histórico.",
        "Las plazas estaban llenas de gente que tomaba café al sol.",
        "Visitamos un museo pequeño con cuadros de artistas de la región.",
        "A mediodía comimos pescado fresco en un restaurante junto al puerto.",
        "Por la tarde hacía mucho calor, así que descansamos en el hotel.",
        "Cuando bajó el sol, salimos otra vez a pasear por el paseo marítimo.",
        "Los niños compraron helados y miraron los barcos que volvían al puerto.",
        "La gente del barrio fue muy amable y nos recomendó varios lugares.",
        "El mercado cubierto tiene frutas, verduras y especias de todos los colores.",
        "Sin duda, es una ciudad que queremos visitar otra vez.")),
}


def write_foreign(rng: random.Random, language: str) -> Doc:
    title, sentences = FOREIGN[language]
    chosen = pick(rng, sentences, 9)
    return Doc(title, tuple(" ".join(chosen[i:i + 3]) for i in range(0, 9, 3)), None, language)


SPAM_KEYWORDS = ("cheap watches", "best price", "buy now", "free shipping", "discount deals",
                 "designer bags", "lowest price guaranteed", "limited offer")


def write_spam(rng: random.Random) -> Doc:
    """Keyword stuffing: the same few phrases over and over (fails repetition rules)."""
    words = pick(rng, SPAM_KEYWORDS, 4)
    line = " ".join(words * 3)
    shout = f"CLICK HERE for {words[0]} and {words[1]}!!! {words[2]}!!! {words[3]}!!!"
    paragraphs = [line] * rng.randint(6, 10) + [shout] * rng.randint(3, 5) + [line] * 3
    return Doc(" ".join(words).upper(), tuple(paragraphs), None)


def write_link_farm(rng: random.Random) -> Doc:
    """A directory of keyword anchors with no prose."""
    anchors = [f"{rng.choice(SPAM_KEYWORDS)} {rng.choice(('online', 'today', 'now', 'here', 'shop'))} {i}"
               for i in range(rng.randint(80, 160))]
    return Doc("Best links directory page " + str(rng.randint(1, 99)), tuple(anchors), None)


BLOCKED_TEXT = {
    "adult": ("You must be eighteen or older to enter this site.",
              "Click here to verify your age and see more members online now."),
    "malware": ("Your computer may be at risk. Download the free security update now to continue.",
                "Your video player is out of date. Install the new codec to watch this video."),
    "spam": ("Earn money fast with our secret system. Limited spots available, sign up today!",
             "Get thousands of backlinks for your website overnight. Order now!"),
}


def write_blocked(rng: random.Random, category: str) -> Doc:
    lines = BLOCKED_TEXT[category]
    return Doc(rng.choice(lines), tuple(rng.choice(lines) for _ in range(rng.randint(2, 4))), None)
