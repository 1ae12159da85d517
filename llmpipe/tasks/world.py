"""The toy web's small world of facts (countries, animals, stories, recipes, arithmetic) that pages
state and that the evaluation probes (``fact_probes``); ``arithmetic_problems`` feeds SFT/RL."""
from __future__ import annotations

import random
from dataclasses import dataclass

from llmpipe.tasks.heldout import HeldOut


@dataclass(frozen=True)
class Country:
    name: str
    capital: str
    continent: str
    language: str | None  # None where a country has several equally official languages
    currency: str  # the currency's short name, as in "the currency of Japan is the yen"


@dataclass(frozen=True)
class Animal:
    name: str
    plural: str
    group: str  # mammal, bird, reptile, ...
    food: str
    habitat: str  # read after "live in the"
    young: str  # the word for a baby
    sound: str | None


@dataclass(frozen=True)
class Probe:
    prompt: str
    answer: str
    kind: str
    subject: str  # the country or animal asked about (what the held-out split is by)


@dataclass(frozen=True)
class Dish:
    name: str
    ingredients: tuple[str, ...]  # "2 cups of flour": an amount, then the ingredient
    steps: tuple[str, ...]  # imperative sentences, in order
    minutes: int


def _countries(rows: str) -> tuple[Country, ...]:
    out = []
    for line in rows.strip().splitlines():
        name, capital, continent, language, currency = (f.strip() for f in line.split("|"))
        out.append(Country(name, capital, continent, language or None, currency))
    return tuple(out)


# name | capital | continent | official language (blank: several) | currency
COUNTRIES: tuple[Country, ...] = _countries("""
France | Paris | Europe | French | euro
Germany | Berlin | Europe | German | euro
Italy | Rome | Europe | Italian | euro
Spain | Madrid | Europe | Spanish | euro
Portugal | Lisbon | Europe | Portuguese | euro
Austria | Vienna | Europe | German | euro
Greece | Athens | Europe | Greek | euro
Poland | Warsaw | Europe | Polish | zloty
Sweden | Stockholm | Europe | Swedish | krona
Norway | Oslo | Europe | Norwegian | krone
Denmark | Copenhagen | Europe | Danish | krone
Finland | Helsinki | Europe | | euro
Iceland | Reykjavik | Europe | Icelandic | krona
Hungary | Budapest | Europe | Hungarian | forint
Romania | Bucharest | Europe | Romanian | leu
Croatia | Zagreb | Europe | Croatian | euro
Serbia | Belgrade | Europe | Serbian | dinar
Ukraine | Kyiv | Europe | Ukrainian | hryvnia
Estonia | Tallinn | Europe | Estonian | euro
Latvia | Riga | Europe | Latvian | euro
Lithuania | Vilnius | Europe | Lithuanian | euro
Slovakia | Bratislava | Europe | Slovak | euro
Slovenia | Ljubljana | Europe | Slovenian | euro
Albania | Tirana | Europe | Albanian | lek
Japan | Tokyo | Asia | Japanese | yen
China | Beijing | Asia | Mandarin | yuan
South Korea | Seoul | Asia | Korean | won
Vietnam | Hanoi | Asia | Vietnamese | dong
Thailand | Bangkok | Asia | Thai | baht
Malaysia | Kuala Lumpur | Asia | Malay | ringgit
India | New Delhi | Asia | | rupee
Pakistan | Islamabad | Asia | | rupee
Bangladesh | Dhaka | Asia | Bengali | taka
Nepal | Kathmandu | Asia | Nepali | rupee
Mongolia | Ulaanbaatar | Asia | Mongolian | tugrik
Iran | Tehran | Asia | Persian | rial
Iraq | Baghdad | Asia | | dinar
Saudi Arabia | Riyadh | Asia | Arabic | riyal
Jordan | Amman | Asia | Arabic | dinar
Laos | Vientiane | Asia | Lao | kip
Cambodia | Phnom Penh | Asia | Khmer | riel
Kazakhstan | Astana | Asia | | tenge
Uzbekistan | Tashkent | Asia | Uzbek | som
Egypt | Cairo | Africa | Arabic | pound
Kenya | Nairobi | Africa | | shilling
Nigeria | Abuja | Africa | English | naira
Ghana | Accra | Africa | English | cedi
Ethiopia | Addis Ababa | Africa | Amharic | birr
Morocco | Rabat | Africa | | dirham
Algeria | Algiers | Africa | | dinar
Tunisia | Tunis | Africa | Arabic | dinar
Senegal | Dakar | Africa | French | franc
Tanzania | Dodoma | Africa | | shilling
Zambia | Lusaka | Africa | English | kwacha
Angola | Luanda | Africa | Portuguese | kwanza
Mozambique | Maputo | Africa | Portuguese | metical
Madagascar | Antananarivo | Africa | | ariary
Namibia | Windhoek | Africa | English | dollar
Canada | Ottawa | North America | | dollar
Mexico | Mexico City | North America | Spanish | peso
Cuba | Havana | North America | Spanish | peso
Jamaica | Kingston | North America | English | dollar
Guatemala | Guatemala City | North America | Spanish | quetzal
Honduras | Tegucigalpa | North America | Spanish | lempira
Nicaragua | Managua | North America | Spanish | cordoba
Panama | Panama City | North America | Spanish | balboa
Brazil | Brasilia | South America | Portuguese | real
Argentina | Buenos Aires | South America | Spanish | peso
Chile | Santiago | South America | Spanish | peso
Peru | Lima | South America | Spanish | sol
Colombia | Bogota | South America | Spanish | peso
Venezuela | Caracas | South America | Spanish | bolivar
Ecuador | Quito | South America | Spanish | dollar
Uruguay | Montevideo | South America | Spanish | peso
Paraguay | Asuncion | South America | | guarani
Australia | Canberra | Oceania | | dollar
New Zealand | Wellington | Oceania | | dollar
Papua New Guinea | Port Moresby | Oceania | | kina
Samoa | Apia | Oceania | | tala
""")


def _animals(rows: str) -> tuple[Animal, ...]:
    out = []
    for line in rows.strip().splitlines():
        name, plural, group, food, habitat, young, sound = (f.strip() for f in line.split("|"))
        out.append(Animal(name, plural, group, food, habitat, young, sound or None))
    return tuple(out)


# name | plural | group | food | habitat | young | sound (blank: none worth naming)
ANIMALS: tuple[Animal, ...] = _animals("""
lion | lions | mammal | meat | savanna | cub | roar
tiger | tigers | mammal | meat | jungle | cub | growl
elephant | elephants | mammal | grass | savanna | calf | trumpet
giraffe | giraffes | mammal | leaves | savanna | calf | hum
zebra | zebras | mammal | grass | savanna | foal | whinny
dog | dogs | mammal | meat | town | puppy | bark
cat | cats | mammal | fish | town | kitten | meow
cow | cows | mammal | grass | farm | calf | moo
horse | horses | mammal | hay | farm | foal | neigh
sheep | sheep | mammal | grass | meadow | lamb | bleat
goat | goats | mammal | shrubs | mountains | kid | bleat
pig | pigs | mammal | vegetables | farm | piglet | oink
rabbit | rabbits | mammal | carrots | meadow | kit | thump
bear | bears | mammal | berries | forest | cub | growl
wolf | wolves | mammal | meat | forest | pup | howl
fox | foxes | mammal | mice | forest | kit | yip
deer | deer | mammal | leaves | forest | fawn | bleat
kangaroo | kangaroos | mammal | grass | outback | joey | grunt
koala | koalas | mammal | eucalyptus | forest | joey | bellow
monkey | monkeys | mammal | fruit | jungle | infant | chatter
bat | bats | mammal | insects | cave | pup | squeak
whale | whales | mammal | krill | ocean | calf | song
dolphin | dolphins | mammal | fish | ocean | calf | click
seal | seals | mammal | fish | sea | pup | bark
mouse | mice | mammal | seeds | field | pup | squeak
owl | owls | bird | mice | forest | owlet | hoot
duck | ducks | bird | plants | pond | duckling | quack
chicken | chickens | bird | grain | farm | chick | cluck
goose | geese | bird | grass | lake | gosling | honk
eagle | eagles | bird | fish | mountains | eaglet | screech
swan | swans | bird | plants | lake | cygnet | hiss
penguin | penguins | bird | fish | ice | chick | squawk
turkey | turkeys | bird | grain | farm | poult | gobble
frog | frogs | amphibian | insects | pond | tadpole | croak
snake | snakes | reptile | mice | desert | hatchling | hiss
turtle | turtles | reptile | plants | sea | hatchling |
crocodile | crocodiles | reptile | meat | river | hatchling | bellow
shark | sharks | fish | fish | ocean | pup |
salmon | salmon | fish | insects | river | fry |
bee | bees | insect | nectar | hive | larva | buzz
butterfly | butterflies | insect | nectar | garden | caterpillar |
cricket | crickets | insect | plants | field | nymph | chirp
""")


def _dishes() -> tuple[Dish, ...]:
    """A few base recipes, each in several variants (so recipe pages are not copies)."""
    bases = [
        ("soup", 35, ["2 onions", "3 carrots", "1 litre of vegetable stock", "a pinch of salt"],
         ["Chop the onions and the carrots into small pieces.",
          "Warm a little oil in a large pot and soften the onions for five minutes.",
          "Add the carrots and the {main} and stir everything together.",
          "Pour in the stock and let the soup simmer for twenty minutes.",
          "Blend the soup until it is smooth and season it with salt and pepper."]),
        ("pancakes", 20, ["200 grams of flour", "2 eggs", "300 millilitres of milk", "a knob of butter"],
         ["Whisk the flour, the eggs and the milk into a smooth batter.",
          "Fold the {main} gently into the batter.",
          "Melt a little butter in a frying pan over a medium heat.",
          "Pour in a small ladle of batter and cook each pancake for about a minute on each side.",
          "Serve the pancakes warm with a spoonful of yoghurt."]),
        ("salad", 10, ["1 cucumber", "4 tomatoes", "a handful of fresh herbs", "2 spoons of olive oil"],
         ["Wash the vegetables and dry them with a clean towel.",
          "Slice the cucumber and cut the tomatoes into wedges.",
          "Add the {main} and tear the herbs over the bowl.",
          "Dress the salad with olive oil and a squeeze of lemon.",
          "Toss everything lightly and serve it straight away."]),
        ("stew", 90, ["1 onion", "2 potatoes", "a tin of chopped tomatoes", "a bay leaf"],
         ["Brown the {main} in a heavy pot with a little oil.",
          "Add the chopped onion and cook it until it turns golden.",
          "Stir in the tomatoes, the potatoes and the bay leaf.",
          "Cover the pot and let the stew cook slowly for over an hour.",
          "Taste the stew, adjust the seasoning and serve it with bread."]),
        ("omelette", 10, ["3 eggs", "a splash of milk", "a knob of butter", "a pinch of pepper"],
         ["Beat the eggs with the milk and the pepper in a bowl.",
          "Melt the butter in a small pan until it foams.",
          "Pour in the eggs and stir them slowly as they begin to set.",
          "Scatter the {main} over one half of the omelette.",
          "Fold the omelette in half and slide it onto a warm plate."]),
        ("bread", 180, ["500 grams of strong flour", "7 grams of dried yeast", "300 millilitres of warm water",
                        "a teaspoon of salt"],
         ["Mix the flour, the yeast and the salt in a large bowl.",
          "Add the warm water and stir until a rough dough forms.",
          "Knead the dough for ten minutes until it feels smooth and springy.",
          "Work the {main} into the dough and leave it to rise for an hour.",
          "Shape the loaf and bake it in a hot oven for about thirty minutes."]),
        ("rice bowl", 30, ["200 grams of rice", "1 spring onion", "a spoon of soy sauce", "a few sesame seeds"],
         ["Rinse the rice until the water runs clear.",
          "Cook the rice gently with a lid on for about fifteen minutes.",
          "Fry the {main} in a hot pan with the soy sauce.",
          "Spoon the rice into bowls and put the {main} on top.",
          "Finish each bowl with spring onion and sesame seeds."]),
        ("cake", 60, ["200 grams of sugar", "200 grams of butter", "4 eggs", "200 grams of flour"],
         ["Beat the butter and the sugar until the mixture is pale and fluffy.",
          "Add the eggs one at a time and beat well after each one.",
          "Fold in the flour and the {main} with a large metal spoon.",
          "Spoon the mixture into a lined tin and smooth the top.",
          "Bake the cake for about forty minutes and let it cool before slicing."]),
    ]
    # base -> (the dish's label, the ingredient as it appears in the steps)
    mains = {
        "soup": [("lentil", "lentils"), ("sweet potato", "sweet potatoes"), ("butternut squash", "squash"),
                 ("tomato", "tomatoes"), ("leek", "leeks")],
        "pancakes": [("blueberry", "blueberries"), ("banana", "sliced bananas"), ("apple", "grated apple"),
                     ("crème fraîche", "crème fraîche"), ("raspberry", "raspberries")],
        "salad": [("feta", "crumbled feta"), ("chickpea", "chickpeas"), ("roasted pepper", "roasted peppers"),
                  ("jalapeño", "sliced jalapeño"), ("avocado", "avocado")],
        "stew": [("beef", "beef"), ("chicken", "chicken thighs"), ("white bean", "white beans"),
                 ("lamb", "lamb"), ("mushroom", "mushrooms")],
        "omelette": [("cheese", "grated cheese"), ("spinach", "spinach"), ("mushroom", "mushrooms"),
                     ("ham", "chopped ham"), ("chive", "fresh chives")],
        "bread": [("olive", "olives"), ("sunflower seed", "sunflower seeds"), ("rosemary", "rosemary"),
                  ("walnut", "walnuts"), ("raisin", "raisins")],
        "rice bowl": [("tofu", "tofu"), ("salmon", "salmon"), ("chicken", "chicken"),
                      ("vegetable", "crispy vegetables"), ("prawn", "prawns")],
        "cake": [("lemon", "lemon zest"), ("chocolate", "cocoa powder"), ("carrot", "grated carrots"),
                 ("almond", "chopped almonds"), ("apple purée", "purée of apples")],
    }
    dishes = []
    for base, minutes, ingredients, steps in bases:
        for label, main in mains[base]:
            dishes.append(Dish(
                name=f"{label} {base}",
                ingredients=(f"a generous amount of {main}", *ingredients),
                steps=tuple(s.format(main=main) for s in steps),
                minutes=minutes,
            ))
    return tuple(dishes)


DISHES: tuple[Dish, ...] = _dishes()

# Story parts: every story page draws a hero, a friend, a place, a problem and a find.
HEROES = (
    "a small fox named Pip", "a brave girl named Lena", "an old fisherman named Tomas",
    "a curious boy named Arlo", "a clever crow named Inka", "a young baker named Rosa",
    "a quiet bear named Bruno", "a cheerful robot named Bolt", "a shy mouse named Tilly",
    "a retired sailor named Abe", "a clever girl named Zoë", "a tall giraffe named Mabel",
)
FRIENDS = (
    "a wise old owl", "a talkative parrot", "a kind neighbour", "a lost puppy", "a grumpy goat",
    "a travelling musician", "a friendly lighthouse keeper", "a tiny green frog",
)
PLACES = (
    "a village by the sea", "a quiet forest", "a busy market town", "a snowy mountain valley",
    "a small island", "an old lighthouse", "a farm at the edge of a river", "a city full of bridges",
    "a desert oasis", "a garden behind a library",
)
PROBLEMS = (
    "a storm blew the roof off the school", "the well in the square ran dry",
    "the baker's oven stopped working the night before the festival",
    "a heavy fog hid the path home", "the river rose and flooded the fields",
    "the village clock stopped and nobody knew the time", "a precious map went missing",
    "the bridge to the next town cracked in the frost",
)
FINDS = (
    "a rusty key", "a glowing lantern", "a torn letter", "a wooden flute", "a bag of seeds",
    "a silver compass", "an old recipe book", "a painted stone",
)


def a_or_an(word: str) -> str:
    return "an" if word[0].lower() in "aeiou" else "a"


# ---------------------------------------------------------------------------------------------
# Probe templates. A prompt template has one "{}" for the subject; the answer follows it after
# a space and the sentence ends with a full stop. TRAIN templates are the ones the toy web
# writes into its pages (among other, non-probe phrasings); HELDOUT templates are phrasings
# the toy web NEVER writes. The two sets are disjoint, and tests/test_toyweb.py checks that no
# heldout prompt occurs anywhere in a generated crawl.

COUNTRY_FIELDS = {"capital": "capital", "continent": "continent", "language": "language",
                  "currency": "currency"}
ANIMAL_FIELDS = {"animal_group": "group", "animal_food": "food", "animal_habitat": "habitat",
                 "animal_young": "young", "animal_sound": "sound"}

TRAIN_TEMPLATES: dict[str, tuple[str, ...]] = {
    "capital": ("The capital of {} is", "The capital city of {} is"),
    "continent": ("{} is a country in", "{} lies in"),
    "language": ("The official language of {} is", "Most people in {} speak"),
    "currency": ("The currency of {} is the", "In {} people pay with the"),
    "animal_group": ("The {} is a kind of", "In the animal kingdom, the {} is a type of"),
    "animal_food": ("The {} likes to eat", "The favourite food of the {} is"),
    "animal_habitat": ("The {} lives in the", "You can find the {} in the"),
    "animal_young": ("The word for a baby {} is", "The baby of the {} is called the"),
    "animal_sound": ("The sound that the {} makes is the", "The {} makes a sound called the"),
}
HELDOUT_TEMPLATES: dict[str, tuple[str, ...]] = {
    "capital": ("The seat of government of {} is in", "If you fly to the capital of {}, you land in"),
    "continent": ("On a world map, {} appears on the continent of",),
    "language": ("Families in {} talk to each other in",),
    "currency": ("To buy bread in {}, you hand over the local",),
    "animal_group": ("In a science lesson, the {} would be listed as a type of",),
    "animal_food": ("At feeding time, a zookeeper gives the {} some",),
    "animal_habitat": ("In the wild, you would look for the {} in the",),
    "animal_young": ("When the {} has a baby, that baby is known as a",),
    "animal_sound": ("If you listen to the {}, you will hear its",),
}


def fact_items() -> list[tuple[str, str, str]]:
    """Every (kind, subject, answer) fact that probes may ask about, in a stable order."""
    items = []
    for country in COUNTRIES:
        for kind, field in COUNTRY_FIELDS.items():
            answer = getattr(country, field)
            if answer is not None:
                items.append((kind, country.name, answer))
    for animal in ANIMALS:
        for kind, field in ANIMAL_FIELDS.items():
            answer = getattr(animal, field)
            if answer is not None:
                items.append((kind, animal.name, answer))
    return items


def fact_probes(heldout: bool) -> list[Probe]:
    """One probe per fact: prompt (which the answer continues after a space), answer, kind.

    ``heldout=False`` uses TRAIN_TEMPLATES, phrasings the toy web writes into its pages;
    ``heldout=True`` uses HELDOUT_TEMPLATES, phrasings it never writes (the sets are disjoint),
    so the gap between the two measures how far a model generalizes beyond memorized wording.
    Templates rotate over the facts of a kind, so every template is probed.
    """
    templates = HELDOUT_TEMPLATES if heldout else TRAIN_TEMPLATES
    counts: dict[str, int] = {}
    probes = []
    for kind, subject, answer in fact_items():
        i = counts[kind] = counts.get(kind, -1) + 1
        template = templates[kind][i % len(templates[kind])]
        probes.append(Probe(template.format(subject), answer, kind, subject))
    return probes


def fact_sentence(kind: str, subject: str, answer: str, rng: random.Random) -> str:
    """A training-phrased sentence stating a fact (the probe prompt followed by its answer)."""
    return f"{rng.choice(TRAIN_TEMPLATES[kind]).format(subject)} {answer}."


# ---------------------------------------------------------------------------------------------
# Arithmetic word problems

NAMES = ("Tom", "Mia", "Sam", "Lena", "Omar", "Ava", "Noah", "Zara", "Leo", "Ruby", "Ivan", "Nina")
THINGS = ("apples", "pencils", "stickers", "marbles", "books", "cookies", "stamps", "shells",
          "balloons", "cards")


# (operation, smallest first operand, largest) and the second operand's range given the first:
# sums of 1..10, differences below 15, products of 2..5. With the ~900 facts of larger operands
# the tiny default model got under a quarter of its sampled sums right after SFT, which left
# RL too few correct samples to learn from.
PROBLEM_OPERANDS = {
    "add": [(a, b) for a in range(1, 11) for b in range(1, 11)],
    "sub": [(a, b) for a in range(2, 16) for b in range(1, a)],
    "mul": [(a, b) for a in range(2, 6) for b in range(2, 6)],
}
# the toy web's solved sums: any operands 0..12, the larger first for a difference
SUM_OPERANDS = {
    "add": [(a, b) for a in range(13) for b in range(13)],
    "sub": [(a, b) for a in range(13) for b in range(a + 1)],
    "mul": [(a, b) for a in range(13) for b in range(13)],
}


def apply(op: str, a: int, b: int) -> int:
    return {"add": a + b, "sub": a - b, "mul": a * b}[op]


def operand_pools(
    operands: dict[str, list[tuple[int, int]]], held: HeldOut | None, heldout: bool
) -> dict[str, list[tuple[int, int]]]:
    """The operand pairs of each operation on one side of the held-out split (all of them
    when ``held`` is None), leaving out operations with none on that side."""
    pools = {op: [ab for ab in pairs if held is None or held.arithmetic(op, *ab) == heldout]
             for op, pairs in operands.items()}
    return {op: pairs for op, pairs in pools.items() if pairs}


@dataclass(frozen=True)
class Problem:
    question: str
    answer: int
    op: str
    a: int
    b: int


def problem_text(rng: random.Random, op: str, a: int, b: int) -> str:
    name, thing = rng.choice(NAMES), rng.choice(THINGS)
    if op == "add":
        return f"{name} has {a} {thing} and gets {b} more. How many {thing} does {name} have now?"
    if op == "sub":
        return f"{name} has {a} {thing} and gives {b} of them away. How many {thing} does {name} have left?"
    return f"{name} has {a} bags with {b} {thing} in each bag. How many {thing} does {name} have in all?"


def problem_pools(held: HeldOut | None = None, heldout: bool = False) -> dict[str, list[tuple[int, int]]]:
    """The word problems' operand pairs of each operation on one side of the held-out split
    (``operand_pools`` over PROBLEM_OPERANDS): computed once per draw loop, since deciding a
    pair's side hashes it."""
    pools = operand_pools(PROBLEM_OPERANDS, held, heldout)
    if not pools:
        raise ValueError("no arithmetic fact on this side of the held-out split")
    return pools


def draw_problem(rng: random.Random, pools: dict[str, list[tuple[int, int]]]) -> Problem:
    """One one-step word problem: an operation first, then one of its operand pairs in ``pools``."""
    op = rng.choice(sorted(pools))
    a, b = rng.choice(pools[op])
    return Problem(problem_text(rng, op, a, b), apply(op, a, b), op, a, b)


def draw_problems(rng: random.Random, n: int, held: HeldOut | None = None, heldout: bool = False) -> list[Problem]:
    """``n`` one-step word problems (addition, subtraction, multiplication) on the requested side
    of the held-out split (any, if ``held`` is None)."""
    pools = problem_pools(held, heldout)
    return [draw_problem(rng, pools) for _ in range(n)]


def arithmetic_problems(
    rng: random.Random, n: int, held: HeldOut | None = None, heldout: bool = False
) -> list[tuple[str, int]]:
    """``n`` word problems and their answers (``draw_problems`` without the fact)."""
    return [(p.question, p.answer) for p in draw_problems(rng, n, held, heldout)]
