"""Toy web: a deterministic synthetic crawl (real WARC/1.1 files) and the truth of every record,
so each data stage can be scored: articles in page chrome among spam, blocked, binary, copies."""
from __future__ import annotations

import gzip
import html
import io
import os
import random
import re
import sys
import uuid
import zlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterator

import pyarrow as pa
from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

from llmpipe.config import ConfigError, stage_params
from llmpipe.tasks import world
from llmpipe.tasks.world import a_or_an, fact_sentence
from llmpipe.io import atomic_path, write_documents
from llmpipe.stats import StageStats

BLOCKLIST_DIR = Path(__file__).resolve().parent / "blocklists"
BLOCKED_CATEGORIES = ("adult", "malware", "spam")
CRAWL_DATE = "2024-05-01T08:00:00Z"  # fixed, so reruns are byte-identical
HTTP_DATE = "Wed, 01 May 2024 08:00:00 GMT"

TRUTH = pa.schema([
    ("id", pa.string()),  # WARC-Record-ID without <urn:uuid: and >, as ingest names documents
    ("url", pa.string()),
    ("warc_file", pa.string()),
    ("kind", pa.string()),
    ("genre", pa.string()),
    ("blocked_category", pa.string()),
    ("language", pa.string()),
    ("content_type", pa.string()),  # the HTTP header as sent (null: no header)
    ("charset_declared", pa.string()),  # the HTTP header's charset (null: none)
    ("charset_true", pa.string()),  # how the body is really encoded (null: not text)
    ("duplicate_of", pa.string()),  # url of the original, for exact and near copies
    ("special", pa.string()),  # a planted oddity: cp1252_as_utf8, escaped_script, ...
    ("title", pa.string()),
    ("main_text", pa.string()),  # the true main text, paragraphs joined by "\n"
])


@dataclass(frozen=True)
class Site:
    name: str
    domain: str
    section: str
    layout: str  # semantic | divs | forum


@dataclass(frozen=True)
class Doc:
    """A page's true content, before chrome: what an ideal extractor returns."""

    title: str
    paragraphs: tuple[str, ...]
    genre: str | None = None
    language: str = "en"


@dataclass(frozen=True)
class Page:
    """One response record to write, with everything the truth table says about it."""

    url: str
    kind: str
    body: bytes
    content_type: str | None
    doc: Doc | None = None
    blocked_category: str | None = None
    charset_true: str | None = None
    duplicate_of: str | None = None
    special: str | None = None


def cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def pick(rng: random.Random, pool: tuple[str, ...] | list[str], k: int) -> list[str]:
    return rng.sample(list(pool), min(k, len(pool)))


# =============================================================================================
# Article writers: rng -> Doc. Pools are large so that pages about the same country or animal
# share few sentences (otherwise near-duplicate detection would rightly flag them).

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


def sum_sentence(rng: random.Random) -> str:
    """A solved sum written as prose, in digits or in words."""
    op = rng.choice(("plus", "minus", "times"))
    a, b = rng.randint(0, 12), rng.randint(0, 12)
    if op == "minus":
        a, b = max(a, b), min(a, b)
    c = {"plus": a + b, "minus": a - b, "times": a * b}[op]
    if c <= 20 and rng.random() < 0.7:
        a, b, c = NUMBER_WORDS[a], NUMBER_WORDS[b], NUMBER_WORDS[c]
    return f"What is {a} {op} {b}? {cap(str(a))} {op} {b} equals {c}."


def write_worksheet(rng: random.Random) -> Doc:
    sums = [sum_sentence(rng) for _ in range(8)]
    problems = [f"{q} The answer is {a}." for q, a in world.arithmetic_problems(rng, 4)]
    intros, tips = pick(rng, WORKSHEET_INTROS, 3), pick(rng, WORKSHEET_TIPS, 5)
    paragraphs = [
        intros[:2],
        ["Let us start with some quick sums.", *sums[:4], tips[0]],
        ["Here are a few more sums to try.", *sums[4:], tips[1]],
        ["Now try these short word problems.", *problems, tips[2], tips[3]],
        [tips[4], intros[2], "Well done for finishing the whole sheet!"],
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


# =============================================================================================
# Page chrome: nav, cookie banner, ads, sidebars, footer, inline script and style. Its wording
# is kept apart from every article's vocabulary, so an extractor's precision can be measured.

SITES = {
    "countries": (Site("Atlas Notes", "atlas-notes.example", "world", "semantic"),
                  Site("Wanderlust Journal", "www.wanderlust-journal.example", "destinations", "divs")),
    "animals": (Site("Wild Facts Daily", "wild-facts-daily.example", "animals", "semantic"),
                Site("Nature Corner", "www.nature-corner.example", "creatures", "divs")),
    "stories": (Site("Storytime Blog", "storytime-blog.example", "tales", "divs"),
                Site("Bedtime Tales", "www.bedtime-tales.example", "stories", "semantic")),
    "recipes": (Site("Kitchen Corner", "kitchen-corner.example", "recipes", "semantic"),
                Site("Home Cooking Club", "www.home-cooking-club.example", "dishes", "divs")),
    "arithmetic": (Site("Maths Practice Hub", "maths-practice-hub.example", "worksheets", "divs"),
                   Site("School Worksheets", "www.school-worksheets.example", "maths", "semantic")),
    "qa": (Site("Ask Around Forum", "ask-around-forum.example", "thread", "forum"),
           Site("Homework Helpers", "www.homework-helpers.example", "questions", "forum")),
}
AGGREGATORS = (Site("Content Roundup", "content-roundup.example", "read", "divs"),
               Site("Daily Reader Digest", "www.daily-reader-digest.example", "article", "semantic"))
MIRRORS = ("mirror-archive.example", "www.web-cache-copy.example")
FOREIGN_SITES = {"de": Site("Reiseblog", "www.reiseblog-sonne.example", "berichte", "semantic"),
                 "fr": Site("Carnet de voyage", "carnet-voyage.example", "recits", "divs"),
                 "es": Site("Diario viajero", "www.diario-viajero.example", "paseos", "semantic")}
SPAM_SITES = (Site("Deal Finder Pro", "deal-finder-pro.example", "offer", "divs"),
              Site("Super Savings Now", "www.super-savings-now.example", "promo", "semantic"))
LINK_FARM_SITE = Site("Link Directory Central", "link-directory-central.example", "dir", "divs")

NAV = ("Home", "Latest", "Topics", "Newsletter", "Shop", "About us", "Contact")
COOKIE_NOTICES = (
    "We use cookies to personalise content and ads and to analyse our traffic.",
    "This website uses cookies. By continuing to browse you agree to our use of cookies.",
    "Cookies help us deliver our services. Manage your consent preferences at any time.",
)
ADS = ("Sponsored: Save up to 50% on premium noise-cancelling headphones this weekend only.",
       "Advertisement: Compare mortgage rates from top lenders in under two minutes.",
       "Sponsored: Upgrade your smartphone plan with unlimited gigabytes today.",
       "Advertisement: Discover luxury spa resorts with exclusive member pricing.")
RELATED = ("Ten gadgets under twenty dollars", "Our editors' weekly picks", "Newsletter archive",
           "Five productivity apps reviewed", "Subscriber exclusive offers", "Podcast episode list",
           "Reader survey results", "Gift cards and vouchers", "Trending hashtags this month",
           "Meet the editorial team", "Advertise with us", "Download our mobile app")
SHARE = "Share on Facebook | Share on Twitter | Pin it | Email this"
CSS = ("body{font-family:Georgia,serif;margin:0;color:#222}nav ul{list-style:none;display:flex}"
       ".cookie-banner{position:fixed;bottom:0;background:#333;color:#fff}.ad-slot{border:1px solid #ddd}")
SCRIPT = ("window.dataLayer=window.dataLayer||[];function gtag(){dataLayer.push(arguments);}"
          "gtag('js',new Date());gtag('config','UA-000000-1');")
USERS = ("quizmaster77", "Helen_K", "geo_dad", "travelbug", "MrsPatel", "owl_lover", "teacher_tom",
         "curious_cat", "mapnerd", "kiwi_jo")


def chrome(site: Site, rng: random.Random) -> dict[str, str]:
    """The HTML pieces around the main text (the same calls for every layout)."""
    nav = "".join(f'<li><a href="/{n.lower().replace(" ", "-")}/">{n}</a></li>' for n in NAV)
    related = "".join(f'<li><a href="/r/{i}">{t}</a></li>' for i, t in enumerate(pick(rng, RELATED, 5)))
    return {
        "head": (f'<style>{CSS}</style>\n<script>{SCRIPT}</script>'),
        "cookie": (f'<div class="cookie-banner" id="cookie-consent"><p>{rng.choice(COOKIE_NOTICES)}</p>'
                   '<button>Accept all</button> <button>Manage settings</button></div>'),
        "nav": f'<nav class="main-nav"><ul>{nav}</ul></nav>',
        "ad": f'<div class="ad-slot advert"><a href="https://ads.adnetwork.example/c?{rng.randint(1, 10**6)}">{rng.choice(ADS)}</a></div>',
        "sidebar": f'<h3>Related links</h3><ul>{related}</ul><p>Subscribe to our newsletter for weekly updates.</p>',
        "footer": (f'<p>&copy; 2024 {site.name}. All rights reserved.</p>'
                   '<p><a href="/privacy">Privacy policy</a> | <a href="/terms">Terms of use</a>'
                   ' | <a href="/contact">Contact</a></p>'),
        "tail": '<script>document.querySelectorAll(".advert").forEach(function(e){e.dataset.seen=1});</script>',
    }


def esc(text: str) -> str:
    return html.escape(text, quote=False)


def render(site: Site, doc: Doc | None, rng: random.Random, meta_charset: str = "utf-8") -> str:
    """A whole HTML page: ``doc`` (title and paragraphs) inside ``site``'s chrome.

    ``doc=None`` gives a boilerplate-only page (a search page with no results)."""
    c = chrome(site, rng)
    title = doc.title if doc else "Search"
    paras = "\n".join(f"<p>{esc(p)}</p>" for p in doc.paragraphs) if doc else ""
    if doc is None:
        body = '<form action="/search"><input name="q"> <button>Search</button></form>'
    elif site.layout == "forum":
        body = "\n".join(
            f'<div class="post"><div class="post-author">{rng.choice(USERS)} &middot; {rng.randint(1, 28)} May 2024</div>'
            f'<div class="post-body"><p>{esc(p)}</p></div>'
            '<div class="post-actions">Reply | Quote | Report</div></div>'
            for p in doc.paragraphs)
        body = f'<h1>{esc(doc.title)}</h1>\n<div class="thread">\n{body}\n</div>'
    elif site.layout == "semantic":
        body = f'<article>\n<h1>{esc(doc.title)}</h1>\n{paras}\n</article>'
    else:
        body = (f'<div class="post"><h2 class="post-title">{esc(doc.title)}</h2>\n'
                f'<div class="entry-content">\n{paras}\n</div>'
                f'<div class="share-buttons">{SHARE}</div></div>')
    if site.layout == "divs":
        page = (f'<div class="wrapper"><div class="topbar"><a class="logo" href="/">{site.name}</a>{c["nav"]}</div>\n'
                f'{c["ad"]}\n<div id="content">\n{body}\n</div>\n<div id="sidebar" class="widget-area">{c["sidebar"]}</div>\n'
                f'<div id="footer">{c["footer"]}</div></div>')
    else:
        page = (f'<header><a class="logo" href="/">{site.name}</a>{c["nav"]}</header>\n{c["ad"]}\n'
                f'<main>\n{body}\n<aside class="sidebar">{c["sidebar"]}</aside>\n</main>\n'
                f'<footer>{c["footer"]}</footer>')
    lang = doc.language if doc else "en"
    return (f'<!DOCTYPE html>\n<html lang="{lang}"><head><meta charset="{meta_charset}">\n'
            f'<title>{esc(title)} | {site.name}</title>\n{c["head"]}\n</head>\n<body>\n{c["cookie"]}\n'
            f'{page}\n{c["tail"]}\n</body></html>\n')


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:60]


def page_url(site: Site, doc: Doc | None, n: int) -> str:
    name = slug(doc.title) if doc else "search"
    if site.layout == "forum":
        return f"https://{site.domain}/{site.section}/{n}/{name}"
    return f"https://{site.domain}/{site.section}/{name}-{n}.html"


def html_page(url: str, kind: str, site: Site, doc: Doc | None, rng: random.Random, **truth) -> Page:
    """A UTF-8 HTML page, declared in the HTTP header (mostly) or only in its <meta>."""
    header = rng.choice(("text/html; charset=utf-8", "text/html; charset=UTF-8", "text/html"))
    return Page(url, kind, render(site, doc, rng).encode("utf-8"), header, doc, charset_true="utf-8", **truth)


# =============================================================================================
# Planted defects

def edit_sentence(sentence: str) -> str:
    """One small wording change, as a copy-editor or a content thief would make (never inside
    a fact's prompt, so copies keep stating facts in the training phrasings)."""
    for old, new in ((" very ", " really "), (" many ", " lots of "), (" small ", " little "),
                     (" often ", " frequently "), (" big ", " large ")):
        if old in sentence:
            return sentence.replace(old, new, 1)
    return sentence.rstrip(".!?") + ", of course."


def near_copy_doc(doc: Doc, rng: random.Random) -> Doc:
    """Two neighbouring paragraphs swapped and one sentence edited."""
    paragraphs = list(doc.paragraphs)
    i = rng.randrange(len(paragraphs))
    sentences = re.split(r"(?<=[.!?]) ", paragraphs[i])
    j = rng.randrange(len(sentences))
    sentences[j] = edit_sentence(sentences[j])
    paragraphs[i] = " ".join(sentences)
    k = rng.randrange(len(paragraphs) - 1)
    paragraphs[k], paragraphs[k + 1] = paragraphs[k + 1], paragraphs[k]
    return replace(doc, paragraphs=tuple(paragraphs))


BINARY_TYPES = (  # content type, extension, leading bytes
    ("image/jpeg", "jpg", b"\xff\xd8\xff\xe0\x00\x10JFIF\x00"),
    ("image/png", "png", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"),
    ("image/gif", "gif", b"GIF89a"),
    ("application/pdf", "pdf", b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog >>\nendobj\n"),
    ("application/x-msdownload", "exe", b"MZ\x90\x00\x03\x00\x00\x00\x04\x00"),
    ("application/zip", "zip", b"PK\x03\x04\x14\x00"),
)
BINARY_HOSTS = ("cdn.atlas-notes.example", "files.kitchen-corner.example", "static.nature-corner.example")


def binary_page(rng: random.Random, n: int) -> Page:
    """An image, PDF, archive or executable, recognisable by Content-Type and URL extension,
    or by only one of the two (no extension; or no Content-Type header at all)."""
    content_type, ext, magic = BINARY_TYPES[n % len(BINARY_TYPES)]
    mode = ("both", "type_only", "extension_only")[(n + n // len(BINARY_TYPES)) % 3]  # all 18 pairs
    host = rng.choice(BINARY_HOSTS)
    url = (f"https://{host}/download?file={n}" if mode == "type_only"
           else f"https://{host}/media/{n:05d}.{ext}")
    body = magic + rng.randbytes(rng.randint(300, 3000))
    return Page(url, "binary", body, None if mode == "extension_only" else content_type,
                special=f"binary_{mode}")


def blocked_domains() -> dict[str, list[str]]:
    """Category -> domains, from the shipped blocklists, read at run time."""
    out = {}
    for category in BLOCKED_CATEGORIES:
        lines = (BLOCKLIST_DIR / f"{category}.txt").read_text().splitlines()
        out[category] = [e for e in (line.split("#", 1)[0].strip() for line in lines) if e]
    return out


def charset_page(url: str, site: Site, doc: Doc, rng: random.Random, special: str) -> Page:
    """A page whose declared charset is wrong or split between header and <meta>."""
    if special == "cp1252_as_utf8":  # legacy bytes, declared UTF-8 everywhere
        body, header, true = render(site, doc, rng, "utf-8").encode("cp1252"), "text/html; charset=utf-8", "cp1252"
    elif special == "utf8_header_latin1":  # header says latin-1, the <meta> rightly says UTF-8
        body, header, true = render(site, doc, rng, "utf-8").encode("utf-8"), "text/html; charset=iso-8859-1", "utf-8"
    else:  # "cp1252_declared": legacy bytes, correctly declared
        body, header, true = (render(site, doc, rng, "windows-1252").encode("cp1252"),
                              "text/html; charset=windows-1252", "cp1252")
    return Page(url, "article", body, header, doc, charset_true=true, special=special)


def with_sentence(doc: Doc, sentence: str, rng: random.Random) -> Doc:
    paragraphs = list(doc.paragraphs)
    i = rng.randrange(len(paragraphs))
    paragraphs[i] = f"{paragraphs[i]} {sentence}"
    return replace(doc, paragraphs=tuple(paragraphs))


ESCAPED_SCRIPT = ('When a pupil typed <script>alert("x")</script> into the library computer, '
                  "the screen simply showed the words instead of running them.")
SPECIAL_TOKEN = ("The old robot printed the marker <|user|> at the top of every page of its "
                 "notebook, which made the children laugh.")
CHARSET_SPECIALS = ("cp1252_as_utf8", "utf8_header_latin1", "cp1252_declared")


# =============================================================================================
# The crawl

def counts_for(articles: int) -> dict[str, int]:
    """How many pages of each non-article kind a web of ``articles`` articles gets."""
    def share(fraction: float, minimum: int) -> int:
        return max(minimum, round(fraction * articles))

    return {"spam": share(0.05, 3), "link_farm": share(0.02, 2), "blocked_domain": share(0.04, 6),
            "binary": share(0.04, 6), "exact_copy": share(0.03, 3), "near_copy": share(0.03, 3),
            "boilerplate": share(0.02, 2), "non_english": share(0.02, 3)}


def deal(rng: random.Random, items: tuple) -> Iterator:
    """Items in shuffled rounds, each once per round: every country and animal gets its fair
    share of pages, so every fact is stated about equally often."""
    while True:
        yield from rng.sample(items, len(items))


def make_articles(rng: random.Random, n: int) -> list[Page]:
    """``n`` clean articles; the first few carry the planted charset and text oddities."""
    genres, weights = list(GENRE_WEIGHTS), list(GENRE_WEIGHTS.values())
    decks = {genre: deal(rng, items) for genre, items in SUBJECTS.items()}
    accented = [d for d in world.DISHES if not d.name.isascii()]
    pages = []
    for i in range(n):
        special = (*CHARSET_SPECIALS, "escaped_script", "special_token")[i] if i < 5 else None
        genre = rng.choices(genres, weights)[0]
        if special in CHARSET_SPECIALS:  # a recipe with non-ASCII words, so the charset matters
            doc = write_recipe(rng, accented[i % len(accented)])
        elif genre in decks:
            doc = WRITERS[genre](rng, next(decks[genre]))
        else:
            doc = WRITERS[genre](rng)
        if special == "escaped_script":
            doc = with_sentence(doc, ESCAPED_SCRIPT, rng)
        elif special == "special_token":
            doc = with_sentence(doc, SPECIAL_TOKEN, rng)
        site = rng.choice(SITES[doc.genre])
        url = page_url(site, doc, i)
        if special in CHARSET_SPECIALS:
            pages.append(charset_page(url, site, doc, rng, special))
        else:
            pages.append(html_page(url, "article", site, doc, rng, special=special))
    return pages


def make_others(rng: random.Random, articles: list[Page], counts: dict[str, int]) -> list[Page]:
    """Spam, link farms, blocked domains, binaries, copies, boilerplate and foreign pages."""
    pages: list[Page] = []
    for n in range(counts["spam"]):
        doc = write_spam(rng)
        pages.append(html_page(page_url(SPAM_SITES[n % 2], doc, n), "spam", SPAM_SITES[n % 2], doc, rng))
    for n in range(counts["link_farm"]):
        doc = write_link_farm(rng)
        pages.append(html_page(page_url(LINK_FARM_SITE, doc, n), "link_farm", LINK_FARM_SITE, doc, rng))
    domains = blocked_domains()
    for n in range(counts["blocked_domain"]):
        category = BLOCKED_CATEGORIES[n % len(BLOCKED_CATEGORIES)]
        listed = domains[category]
        domain = listed[n // len(BLOCKED_CATEGORIES) % len(listed)]
        host = ("", "www.", "m.", "promo.")[n % 4] + domain  # subdomains are blocked too
        doc = write_blocked(rng, category)
        site = Site(domain, host, "page", "divs")
        pages.append(html_page(page_url(site, doc, n), "blocked_domain", site, doc, rng,
                               blocked_category=category))
    pages += [binary_page(rng, n) for n in range(counts["binary"])]
    # copies of long, many-paragraph articles: a near copy of a three-line post is a new post
    plain = [p for p in articles if p.special is None and len(p.doc.paragraphs) >= 4
             and len(" ".join(p.doc.paragraphs).split()) >= 180]
    originals = rng.sample(plain, min(len(plain), counts["exact_copy"] + counts["near_copy"]))
    for n, original in enumerate(originals[: counts["exact_copy"]]):
        path = original.url.split("/", 3)[3]
        pages.append(replace(original, url=f"https://{MIRRORS[n % 2]}/{path}", kind="exact_copy",
                             duplicate_of=original.url))
    for n, original in enumerate(originals[counts["exact_copy"]:]):
        doc = near_copy_doc(original.doc, rng)
        site = AGGREGATORS[n % 2]
        pages.append(html_page(page_url(site, doc, n), "near_copy", site, doc, rng,
                               duplicate_of=original.url))
    for n in range(counts["boilerplate"]):
        site = rng.choice(SITES[rng.choice(list(SITES))])
        pages.append(html_page(f"https://{site.domain}/search?page={n}", "boilerplate", site, None, rng))
    languages = list(FOREIGN)
    for n in range(counts["non_english"]):
        language = languages[n % len(languages)]
        doc, site = write_foreign(rng, language), FOREIGN_SITES[language]
        pages.append(html_page(page_url(site, doc, n), "non_english", site, doc, rng))
    return pages


def build_crawl(seed: int, articles: int, files: int) -> list[list[Page]]:
    """Every page, shuffled into ``files`` lists; the last page of the first list is the one
    whose record gets cut off (an extra article, so no other kind loses a page)."""
    rng = random.Random(f"toyweb:{seed}")
    clean = make_articles(rng, articles)
    pages = clean + make_others(rng, clean, counts_for(articles))
    rng.shuffle(pages)
    crawl = [pages[i::files] for i in range(files)]
    doc = write_story(rng)
    site = rng.choice(SITES["stories"])
    cut = html_page(page_url(site, doc, articles), "truncated", site, doc, rng, special="truncated")
    crawl[0].append(cut)
    return crawl


# =============================================================================================
# WARC writing

def record_bytes(writer_buffer: io.BytesIO, record) -> bytes:
    writer_buffer.seek(0)
    writer_buffer.truncate()
    WARCWriter(writer_buffer, gzip=False, warc_version="1.1").write_record(record)
    return writer_buffer.getvalue()


def response_record(page: Page, record_id: str, date: str):
    headers = [("Server", "nginx"), ("Date", HTTP_DATE)]
    if page.content_type is not None:
        headers.append(("Content-Type", page.content_type))
    headers.append(("Content-Length", str(len(page.body))))
    http = StatusAndHeaders("200 OK", headers, protocol="HTTP/1.1")
    builder = WARCWriter(io.BytesIO(), gzip=False, warc_version="1.1")
    return builder.create_warc_record(
        page.url, "response", payload=io.BytesIO(page.body), length=len(page.body), http_headers=http,
        warc_headers_dict={"WARC-Record-ID": f"<urn:uuid:{record_id}>", "WARC-Date": date},
    )


def warcinfo_record(filename: str, record_id: str):
    info = (f"software: llmpipe toyweb\r\nformat: WARC File Format 1.1\r\n"
            f"description: synthetic toy-web crawl {filename}\r\n").encode()
    builder = WARCWriter(io.BytesIO(), gzip=False, warc_version="1.1")
    return builder.create_warc_record(
        "", "warcinfo", payload=io.BytesIO(info), length=len(info),
        warc_content_type="application/warc-fields",
        warc_headers_dict={"WARC-Record-ID": f"<urn:uuid:{record_id}>", "WARC-Date": CRAWL_DATE,
                           "WARC-Filename": filename},
    )


def cut_member(raw: bytes) -> bytes:
    """A gzip member holding ``raw`` only up to the middle of its HTTP body, with no trailer:
    what a crawler killed mid-write leaves behind."""
    body_start = raw.index(b"\r\n\r\n", raw.index(b"HTTP/1.1")) + 4
    cut = body_start + (len(raw) - body_start) // 2
    z = zlib.compressobj(6, zlib.DEFLATED, 31)
    return z.compress(raw[:cut]) + z.flush(zlib.Z_SYNC_FLUSH)


def record_date(n: int) -> str:
    return f"2024-05-01T{8 + n // 3600:02d}:{n // 60 % 60:02d}:{n % 60:02d}Z"


def write_warc(path: str | os.PathLike, pages: list[Page], ids: random.Random) -> list[str]:
    """Write one .warc.gz (one gzip member per record, mtime 0); return the response ids."""
    filename = os.path.basename(os.fspath(path))
    buffer = io.BytesIO()
    out = [gzip.compress(record_bytes(buffer, warcinfo_record(filename, str(uuid.UUID(int=ids.getrandbits(128), version=4)))),
                         mtime=0)]
    record_ids = []
    for n, page in enumerate(pages):
        record_id = str(uuid.UUID(int=ids.getrandbits(128), version=4))
        raw = record_bytes(buffer, response_record(page, record_id, record_date(n)))
        out.append(cut_member(raw) if page.kind == "truncated" else gzip.compress(raw, mtime=0))
        record_ids.append(record_id)
    with atomic_path(path) as tmp:
        tmp.write_bytes(b"".join(out))
    return record_ids


def truth_row(page: Page, record_id: str, warc_file: str) -> dict:
    declared = None
    if page.content_type and "charset=" in page.content_type:
        declared = page.content_type.split("charset=", 1)[1].strip().lower()
    doc = page.doc
    return {
        "id": record_id, "url": page.url, "warc_file": warc_file, "kind": page.kind,
        "genre": doc.genre if doc else None, "blocked_category": page.blocked_category,
        "language": doc.language if doc else ("en" if page.kind == "boilerplate" else None),
        "content_type": page.content_type, "charset_declared": declared,
        "charset_true": page.charset_true, "duplicate_of": page.duplicate_of,
        "special": page.special, "title": doc.title if doc else None,
        "main_text": "\n".join(doc.paragraphs) if doc else "",
    }


def generate(seed: int, articles: int, warc_paths: list[str], truth_path: str,
             stats: StageStats) -> list[dict]:
    """Write the crawl and its truth table; count pages by kind in ``stats``."""
    crawl = build_crawl(seed, articles, len(warc_paths))
    ids = random.Random(f"toyweb-ids:{seed}")
    rows = []
    for path, pages in zip(warc_paths, crawl):
        warc_file = os.path.basename(path)
        for page, record_id in zip(pages, write_warc(path, pages, ids)):
            rows.append(truth_row(page, record_id, warc_file))
            stats.read(len(page.body))
            stats.kept(len(page.body))
    write_documents(truth_path, rows, TRUTH)
    kinds: dict[str, int] = {}
    genres: dict[str, int] = {}
    for row in rows:
        kinds[row["kind"]] = kinds.get(row["kind"], 0) + 1
        if row["kind"] == "article":
            genres[row["genre"]] = genres.get(row["genre"], 0) + 1
    stats.extra.update({
        "kinds": dict(sorted(kinds.items())), "article_genres": dict(sorted(genres.items())),
        "article_main_text_bytes": sum(len(r["main_text"].encode()) for r in rows if r["kind"] == "article"),
        "warc_bytes": sum(os.path.getsize(p) for p in warc_paths),
    })
    return rows


def add_arguments(parser, stage: str) -> None:
    parser.add_argument("--warc", nargs="+", required=True, help="the .warc.gz files to write (toyweb.files of them)")
    parser.add_argument("--truth", required=True, help="ground-truth Parquet, one row per response record")
    parser.add_argument("--stats", required=True, help="stats.json")


def run(args, stage: str) -> int:
    params = stage_params(args.params, args.config, "toyweb")
    if len(args.warc) != params["files"]:
        raise ConfigError(f"toyweb.files is {params['files']} but {len(args.warc)} --warc paths were given")
    stats = StageStats(stage="toyweb")
    generate(params["seed"], params["articles"], args.warc, args.truth, stats)
    data = stats.write(args.stats)
    print(f"toyweb: {data['docs_out']} records in {len(args.warc)} files; kinds {data['extra']['kinds']}",
          file=sys.stderr)
    return 0
