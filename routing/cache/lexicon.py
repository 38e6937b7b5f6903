"""Word lists the near-miss guards use. Small and hand-written: each list names a kind of word
that changes the answer when it changes (a number, a negation, a language, a direction)."""

from __future__ import annotations

STOPWORDS = frozenset(
    """
    a an the and or but if then so of in on at by for with about as into onto from to up down out
    over under again further once here there when where why how what which who whom whose this that
    these those am is are was were be been being have has had having do does did doing will would
    shall should can could may might must i me my mine myself we us our ours you your yours he him
    his she her hers it its they them their theirs what's whats i'm im i've ive it's its
    some any all each every both few more most other such only own same than too very just also
    s t get got getting make made go going way ways thing things really actually please
    someone somebody something anyone anybody anything one ones people person good best better
    know tell give explain describe like use used using want need
    vs versus
    """.split()
)

# Cardinal words only: "first" and "one" are too often not numbers ("which one is better").
NUMBER_WORDS = {
    "zero": "0", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6", "seven": "7",
    "eight": "8", "nine": "9", "ten": "10", "eleven": "11", "twelve": "12", "thirteen": "13",
    "fourteen": "14", "fifteen": "15", "sixteen": "16", "seventeen": "17", "eighteen": "18",
    "nineteen": "19", "twenty": "20", "thirty": "30", "forty": "40", "fifty": "50", "sixty": "60",
    "seventy": "70", "eighty": "80", "ninety": "90", "hundred": "100", "thousand": "1000",
    "million": "1000000", "billion": "1000000000", "half": "0.5", "dozen": "12", "twice": "x2",
    "double": "x2", "triple": "x3", "once": "x1",
}  # fmt: skip

NEGATIONS = frozenset(
    "not no never cannot can't cant don't dont doesn't doesnt didn't didnt isn't isnt aren't arent "
    "wasn't wasnt weren't werent won't wont wouldn't wouldnt shouldn't shouldnt couldn't couldnt "
    "haven't havent hasn't hasnt hadn't hadnt mustn't without none nobody nothing nowhere neither "
    "nor".split()
)

NATURAL_LANGUAGES = frozenset(
    "english french spanish german italian portuguese dutch russian ukrainian polish czech "
    "swedish norwegian danish finnish greek turkish arabic hebrew persian farsi hindi urdu bengali "
    "punjabi tamil telugu marathi gujarati kannada malayalam chinese mandarin cantonese japanese "
    "korean vietnamese thai indonesian malay tagalog filipino swahili latin esperanto romanian "
    "hungarian bulgarian serbian croatian catalan basque irish welsh icelandic".split()
)

# Names that are programming languages only in a programming question are still kept: a
# different one changes the answer either way ("go" and "swift" are left out: too common).
PROGRAMMING_LANGUAGES = frozenset(
    "python java javascript js typescript ts c c++ cpp c# csharp f# golang rust ruby php perl "
    "kotlin scala haskell erlang elixir clojure lisp scheme ocaml fortran cobol pascal delphi "
    "matlab julia lua dart objective-c objc vb vb.net visual-basic assembly asm sql plsql t-sql "
    "bash shell powershell zsh html css sass scss r groovy solidity verilog vhdl prolog "
    "smalltalk ada nim zig crystal elm".split()
)

# Words around which order decides the meaning: "km to miles" is not "miles to km". ("vs" is
# not one: "Python vs Java" and "Java vs Python" ask the same.)
DIRECTION_WORDS = frozenset("to into from than over against per before after onto toward towards".split())

# Pairs of opposites: one side in a query and the other in a cached one means another question.
OPPOSITES = [
    ("more", "less"), ("more", "fewer"), ("most", "least"), ("bigger", "smaller"),
    ("biggest", "smallest"), ("larger", "smaller"), ("largest", "smallest"), ("greater", "smaller"),
    ("greatest", "least"), ("higher", "lower"), ("highest", "lowest"), ("longer", "shorter"),
    ("longest", "shortest"), ("faster", "slower"), ("fastest", "slowest"), ("older", "younger"),
    ("oldest", "youngest"), ("best", "worst"), ("better", "worse"), ("max", "min"),
    ("maximum", "minimum"), ("increase", "decrease"), ("increase", "reduce"), ("rise", "fall"),
    ("above", "below"), ("before", "after"), ("buy", "sell"), ("buying", "selling"),
    ("pros", "cons"), ("advantages", "disadvantages"), ("benefits", "drawbacks"),
    ("benefits", "risks"), ("positive", "negative"), ("start", "stop"), ("open", "close"),
    ("import", "export"), ("encrypt", "decrypt"), ("encode", "decode"), ("upload", "download"),
    ("hot", "cold"), ("cheap", "expensive"), ("cheapest", "expensive"), ("easy", "hard"),
    ("easy", "difficult"), ("easiest", "hardest"), ("gain", "lose"), ("win", "lose"),
    ("add", "remove"), ("enable", "disable"), ("install", "uninstall"), ("north", "south"),
    ("east", "west"), ("male", "female"), ("men", "women"), ("man", "woman"), ("boy", "girl"),
    ("left", "right"), ("legal", "illegal"), ("true", "false"), ("safe", "dangerous"),
    ("healthy", "unhealthy"), ("good", "bad"), ("love", "hate"), ("like", "dislike"),
    ("first", "last"), ("early", "late"), ("earliest", "latest"), ("inside", "outside"),
    ("import", "export"), ("input", "output"), ("ascending", "descending"), ("push", "pull"),
    ("celsius", "fahrenheit"), ("km", "miles"), ("kg", "pounds"), ("kilograms", "pounds"),
    ("meters", "feet"), ("metres", "feet"), ("inches", "centimeters"), ("inches", "cm"),
]  # fmt: skip
