"""The built-in content bank: situations, personas and emotion phrasing the scenario sampler and
the template writer compose from.

Phrases carry slots (``{who}``, ``{when}``, ``{thing}`` ...) filled per dialogue from the
situation's fillers, so a situation yields many distinct sentences. Emotions the bank has no
phrasing for fall back to the ``neutral`` phrasing with the emotion's name spelled out.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Situation:
    """Something that happened to the user: event sentences, follow-up details, helpful steps."""

    name: str
    events: tuple[str, ...]
    details: tuple[str, ...]
    steps: tuple[str, ...]
    fillers: dict[str, tuple[str, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class Persona:
    """Who the user is: a short self-description and the people around them."""

    name: str
    intro: tuple[str, ...]
    people: tuple[str, ...]


WHEN = (
    "yesterday",
    "this morning",
    "last night",
    "earlier today",
    "on Monday",
    "last week",
    "a few days ago",
    "just an hour ago",
    "over the weekend",
    "this afternoon",
)

SITUATIONS: tuple[Situation, ...] = (
    Situation(
        "work_deadline",
        events=(
            "my manager moved the {thing} deadline up to {day}",
            "I found out {when} that the {thing} is due {day}, not next month",
            "{who} handed me the whole {thing} {when} and said it has to be done by {day}",
            "the {thing} I worked on for weeks has to be redone before {day}",
        ),
        details=(
            "I already stayed late three nights in a row",
            "nobody else on the team seems to be worried about it",
            "I keep making small mistakes because I am rushing",
            "I promised {who} I would help them this week too",
        ),
        steps=(
            "write down the three parts of the {thing} that matter most and start with the first",
            "ask your manager which parts of the {thing} can wait until after {day}",
            "block one quiet hour tomorrow morning just for the {thing}",
            "tell {who} honestly how much you can take on right now",
        ),
        fillers={
            "thing": ("report", "presentation", "budget plan", "product launch", "client proposal"),
            "day": ("Friday", "tomorrow", "Thursday", "the end of the week", "Monday morning"),
        },
    ),
    Situation(
        "exam_result",
        events=(
            "I got my {thing} results back {when}",
            "the grades for the {thing} were posted {when}",
            "my teacher returned the {thing} {when} and I could not believe the score",
            "{who} told me {when} how I did on the {thing}",
        ),
        details=(
            "I studied every evening for a month",
            "my parents were expecting a lot from this",
            "it decides whether I can stay in the program",
            "all of my friends passed without much effort",
        ),
        steps=(
            "look at which questions cost you the most points and plan around those",
            "ask your teacher for a short meeting about the {thing}",
            "give yourself one evening off before deciding anything",
            "talk it through with {who}, they know how hard you worked",
        ),
        fillers={"thing": ("math exam", "driving test", "chemistry final", "language test")},
    ),
    Situation(
        "moving_city",
        events=(
            "I moved to {place} {when} and I do not know anyone here",
            "we signed the lease for an apartment in {place} {when}",
            "my company is sending me to {place} for a whole year",
            "{who} and I decided {when} to move to {place}",
        ),
        details=(
            "the boxes are still everywhere in the living room",
            "I miss walking to my favorite cafe back home",
            "the neighbors have not said a word to me yet",
            "everything costs more here than I expected",
        ),
        steps=(
            "pick one small local spot in {place} and make it your regular place",
            "join one club or class in {place} that meets every week",
            "schedule a weekly call with {who} so home feels closer",
            "unpack just one room completely so you have a calm corner",
        ),
        fillers={"place": ("Chicago", "a small town", "Berlin", "the city", "Toronto", "Denver")},
    ),
    Situation(
        "pet",
        events=(
            "my {thing} ran out of the yard {when}",
            "the vet called {when} about my {thing}",
            "we adopted a {thing} from the shelter {when}",
            "my old {thing} stopped eating {when}",
        ),
        details=(
            "we have had the {thing} since I was a kid",
            "the house feels strange and quiet right now",
            "{who} keeps asking me what is going to happen",
            "I did not sleep at all last night",
        ),
        steps=(
            "call the local shelters and post a photo in the neighborhood group",
            "write down your questions before you talk to the vet again",
            "set up a calm corner with the {thing}'s blanket and toys",
            "let {who} help you, you do not have to handle this alone",
        ),
        fillers={"thing": ("dog", "cat", "puppy", "rabbit", "old dog")},
    ),
    Situation(
        "friendship",
        events=(
            "{who} forgot my birthday {when}",
            "I had a big argument with {who} {when}",
            "{who} shared something I told them in private",
            "{who} canceled our trip {when} without any real reason",
        ),
        details=(
            "we have been close since high school",
            "they have not answered my messages since then",
            "I keep replaying the conversation in my head",
            "other people in our group already know about it",
        ),
        steps=(
            "send {who} a short message saying you would like to talk",
            "write down what you want them to understand before you meet",
            "give it a day or two so you can talk calmly",
            "spend some time with people who make you feel safe",
        ),
    ),
    Situation(
        "health",
        events=(
            "the doctor wants to run more tests on my {thing}",
            "I hurt my {thing} {when} while running",
            "I got the results for my {thing} scan {when}",
            "my {thing} has been hurting for two weeks now",
        ),
        details=(
            "I have to wait until next week for an answer",
            "I cannot do my usual training right now",
            "{who} keeps telling me not to worry",
            "I looked things up online and that made it worse",
        ),
        steps=(
            "write your questions down before the next appointment",
            "ask {who} to come with you to the doctor",
            "stay away from searching symptoms online tonight",
            "do one gentle thing for your body today, like a short walk",
        ),
        fillers={"thing": ("knee", "back", "heart", "shoulder", "ankle")},
    ),
    Situation(
        "new_job",
        events=(
            "I got an offer {when} for a job as a {thing}",
            "today was my first day as a {thing}",
            "I was promoted to {thing} {when}",
            "the interview for the {thing} position went better than I hoped",
        ),
        details=(
            "I applied for almost forty jobs this year",
            "it means moving away from {who}",
            "the salary is much better than before",
            "I am not sure I am ready for so much responsibility",
        ),
        steps=(
            "write down what you want to learn in your first month",
            "celebrate tonight with {who}, you earned it",
            "ask your new manager what success looks like after ninety days",
            "make a list of questions for your first week",
        ),
        fillers={"thing": ("nurse", "designer", "team lead", "teacher", "data analyst")},
    ),
    Situation(
        "family",
        events=(
            "{who} is moving back in with us {when}",
            "{who} told the whole family about my plans {when}",
            "I found out {when} that {who} is getting married",
            "{who} called {when} and we ended up shouting",
        ),
        details=(
            "holidays are always tense in our family",
            "I feel like nobody asked for my opinion",
            "my brother thinks I am overreacting",
            "it has been like this for years",
        ),
        steps=(
            "choose one thing you want {who} to hear and say only that",
            "take a short walk before the next family conversation",
            "agree with yourself on a time limit for the visit",
            "find one person in the family who understands you and talk to them first",
        ),
    ),
    Situation(
        "money",
        events=(
            "my rent is going up by two hundred dollars next month",
            "I lost my wallet {when} with all my cards in it",
            "a surprise bill for the {thing} arrived {when}",
            "I finally paid off my {thing} {when}",
        ),
        details=(
            "I was already counting every dollar",
            "I did not want to tell {who} about it",
            "it took me three years to get here",
            "I have no idea how to plan for the next months",
        ),
        steps=(
            "write down your fixed costs for next month on one page",
            "call the bank today and block the cards",
            "ask whether the {thing} bill can be paid in parts",
            "set aside a small amount each week, even ten dollars helps",
        ),
        fillers={"thing": ("car repair", "dentist", "student loan", "credit card", "phone")},
    ),
    Situation(
        "travel",
        events=(
            "my flight to {place} was canceled {when}",
            "we are finally going to {place} next week",
            "I missed the last train home from {place} {when}",
            "{who} surprised me {when} with tickets to {place}",
        ),
        details=(
            "I have been saving for this trip for a year",
            "the airline has not offered anything yet",
            "I have an important meeting the day after",
            "I have never been abroad before",
        ),
        steps=(
            "ask the airline for a rebooking and write down the agent's name",
            "make a short packing list tonight so you can relax tomorrow",
            "look for a hotel near the station and rest before deciding more",
            "pick one thing in {place} you really want to see and plan around it",
        ),
        fillers={"place": ("Lisbon", "Tokyo", "the coast", "Rome", "my hometown", "Mexico City")},
    ),
    Situation(
        "relationship",
        events=(
            "{who} and I broke up {when}",
            "{who} asked me to move in together {when}",
            "I found out {when} that {who} has been talking to their ex",
            "{who} said {when} that they need some space",
        ),
        details=(
            "we were together for almost four years",
            "I thought things were going really well",
            "all my friends say they saw it coming",
            "we still share the same apartment for now",
        ),
        steps=(
            "write down what you need from {who} before you talk again",
            "spend this evening with a friend instead of alone",
            "give yourself permission to not decide anything this week",
            "ask {who} for one honest conversation at a calm moment",
        ),
    ),
    Situation(
        "neighbor_noise",
        events=(
            "my upstairs neighbor played loud music until three in the morning {when}",
            "the construction next door started at six {when}",
            "the neighbors' dog barked the whole night {when}",
            "someone scratched my car in the parking lot {when}",
        ),
        details=(
            "I have to get up early for work",
            "I already left a polite note last week",
            "the landlord never answers my emails",
            "it happens almost every weekend now",
        ),
        steps=(
            "write a short dated list of the nights it happened",
            "knock on their door at a calm time and ask for one specific change",
            "try earplugs or a fan tonight so you can sleep",
            "send the landlord one clear message with the dates attached",
        ),
    ),
    Situation(
        "hobby_success",
        events=(
            "my painting was chosen for the {thing} exhibition {when}",
            "I finished my first half marathon {when}",
            "the song I wrote was played on the radio {when}",
            "I baked a {thing} for {who} and it turned out perfect",
        ),
        details=(
            "I started practicing only a year ago",
            "{who} was there to see it",
            "I almost gave up twice along the way",
            "people I do not even know sent me messages",
        ),
        steps=(
            "take a picture of this moment so you can look back on it",
            "tell {who} how much their support meant",
            "choose your next small goal while the motivation is fresh",
            "write down what helped you most so you can repeat it",
        ),
        fillers={"thing": ("city", "spring", "school", "birthday cake", "lemon pie")},
    ),
    Situation(
        "lost_item",
        events=(
            "I lost my grandmother's ring somewhere in the {place} {when}",
            "my laptop with all my photos was stolen {when}",
            "I left my phone on the bus {when}",
            "the bag with my passport disappeared at the {place} {when}",
        ),
        details=(
            "it is the only thing I have from her",
            "I never made a backup of the photos",
            "I need it for a trip next week",
            "I retraced my steps twice already",
        ),
        steps=(
            "call the lost and found of the {place} and leave your number",
            "file a report today, it helps with insurance later",
            "make a list of every place you were in the last two hours",
            "ask {who} to help you search with fresh eyes",
        ),
        fillers={"place": ("park", "station", "mall", "airport", "gym")},
    ),
    Situation(
        "school_project",
        events=(
            "my group left the whole {thing} to me {when}",
            "our {thing} won first place at the school fair {when}",
            "the teacher said {when} that our {thing} has to be redone",
            "{who} copied my {thing} and handed it in as their own",
        ),
        details=(
            "I spent every weekend on it",
            "the others keep saying they are busy",
            "it counts for half of the final grade",
            "I do not want to get anyone in trouble",
        ),
        steps=(
            "write one message to the group that lists who does which part",
            "talk to the teacher about how the work was shared",
            "save every draft with a date so your work is visible",
            "share the good news with {who} tonight",
        ),
        fillers={"thing": ("science project", "history essay", "robot", "video project")},
    ),
    Situation(
        "weather_event",
        events=(
            "a storm knocked out our power {when}",
            "the basement flooded after the rain {when}",
            "the first snow of the year fell {when}",
            "a tree fell on our fence {when}",
        ),
        details=(
            "the food in the fridge is going bad",
            "the kids are excited and I am exhausted",
            "the insurance company put me on hold for an hour",
            "it has never happened here before",
        ),
        steps=(
            "take photos of everything before you clean up",
            "check on {who} and make sure everyone is warm and safe",
            "call the insurance company again early tomorrow morning",
            "make a hot drink and let yourself rest for a moment",
        ),
    ),
)

PERSONAS: tuple[Persona, ...] = (
    Persona(
        "student",
        ("I am a student", "I am in my second year of college"),
        ("my roommate", "my best friend", "my professor", "my study partner"),
    ),
    Persona(
        "nurse",
        ("I work night shifts as a nurse", "I am a nurse at a busy hospital"),
        ("my colleague", "my sister", "my partner", "my supervisor"),
    ),
    Persona(
        "parent",
        ("I am a parent of two", "I have a little daughter"),
        ("my husband", "my wife", "my mother", "my oldest son"),
    ),
    Persona(
        "retiree",
        ("I retired last year", "I am seventy and live alone"),
        ("my grandson", "my neighbor", "my old friend", "my daughter"),
    ),
    Persona(
        "engineer",
        ("I am a software engineer", "I work at a small startup"),
        ("my manager", "my teammate", "my girlfriend", "my cofounder"),
    ),
    Persona(
        "teacher",
        ("I teach at a middle school", "I am a music teacher"),
        ("my principal", "my brother", "a colleague", "my partner"),
    ),
    Persona(
        "chef",
        ("I cook at a restaurant downtown", "I am a pastry chef"),
        ("the head chef", "my cousin", "my boyfriend", "my business partner"),
    ),
    Persona(
        "teenager",
        ("I am sixteen", "I am in high school"),
        ("my mom", "my dad", "my best friend", "my coach"),
    ),
    Persona(
        "artist",
        ("I am a painter", "I make music in my spare time"),
        ("my mentor", "my aunt", "my friend", "my gallery owner"),
    ),
    Persona(
        "driver",
        ("I drive a delivery truck", "I work as a taxi driver"),
        ("my boss", "my wife", "my son", "a friend from work"),
    ),
)

# Per emotion: how a user opens, says how they feel (mild / strong), and reacts to support; how
# the assistant acknowledges and validates it.
EMOTION_PHRASES: dict[str, dict[str, tuple[str, ...]]] = {
    "neutral": {
        "open": ("So,", "Well,", "Okay, so", "Just to tell you,", "Here is the thing,"),
        "feel_mild": (
            "I am not sure what to make of it.",
            "I guess it is fine.",
            "I am trying to figure out what comes next.",
        ),
        "feel_strong": (
            "I really need to think this through.",
            "I honestly do not know what to do with it.",
            "It is a lot to take in.",
        ),
        "react": (
            "That makes sense.",
            "Okay, I can try that.",
            "Hm, I had not thought of it that way.",
        ),
        "ack": (
            "Thanks for telling me about this.",
            "I hear you.",
            "Got it, that is quite a lot to process.",
        ),
        "validate": (
            "It is normal to need a moment with news like this.",
            "Taking time to sort out your thoughts is a good idea.",
        ),
    },
    "happy": {
        "open": (
            "Guess what!",
            "I have great news!",
            "You will not believe it!",
            "Oh, I am so glad!",
            "Hey, listen to this!",
        ),
        "feel_mild": ("I am really pleased.", "It made my day.", "I cannot stop smiling."),
        "feel_strong": (
            "I am so incredibly happy!",
            "This is the best thing that happened all year!",
            "I feel like I could fly!",
        ),
        "react": (
            "Yes, I will do that!",
            "That sounds wonderful!",
            "You are right, I should enjoy it!",
        ),
        "ack": (
            "That is wonderful news!",
            "Congratulations, I am so happy for you!",
            "What a great moment!",
        ),
        "validate": (
            "You have every reason to be proud.",
            "Moments like this are worth celebrating.",
            "All your effort really paid off.",
        ),
    },
    "sad": {
        "open": ("I do not know,", "Honestly,", "It has been hard,", "I just,", "I feel so down,"),
        "feel_mild": (
            "I feel a bit empty.",
            "I keep feeling low about it.",
            "It makes me quiet and tired.",
        ),
        "feel_strong": (
            "I feel completely heartbroken.",
            "I cannot stop crying about it.",
            "Everything feels so heavy right now.",
        ),
        "react": ("Maybe you are right.", "I will try, thank you.", "That helps a little."),
        "ack": (
            "I am so sorry that happened.",
            "That sounds really painful.",
            "I am sorry, that is a heavy thing to carry.",
        ),
        "validate": (
            "It makes sense that you feel sad about this.",
            "Anyone would feel hurt in your place.",
            "Your feelings are completely understandable.",
        ),
    },
    "angry": {
        "open": (
            "I am so done!",
            "Unbelievable!",
            "Seriously,",
            "I cannot believe this!",
            "You know what?",
        ),
        "feel_mild": (
            "It really annoys me.",
            "I am pretty irritated.",
            "It is getting on my nerves.",
        ),
        "feel_strong": (
            "I am absolutely furious!",
            "I am so angry I could scream!",
            "This makes my blood boil!",
        ),
        "react": (
            "Fine, I will try that.",
            "Okay, I need to calm down first.",
            "Maybe that is fair.",
        ),
        "ack": (
            "That sounds really frustrating.",
            "I can hear how angry you are.",
            "No wonder you are upset.",
        ),
        "validate": (
            "Anyone would be angry after being treated like that.",
            "Your anger makes sense, this was not fair to you.",
            "It is okay to feel this way.",
        ),
    },
    "fearful": {
        "open": (
            "I am scared,",
            "I am really nervous,",
            "I do not feel safe,",
            "Oh no,",
            "Please help,",
        ),
        "feel_mild": (
            "I feel uneasy about it.",
            "It makes me a little nervous.",
            "I keep worrying about it.",
        ),
        "feel_strong": (
            "I am terrified of what comes next.",
            "My heart is racing just thinking about it.",
            "I am so afraid I cannot think straight.",
        ),
        "react": (
            "Okay, I will try to breathe.",
            "That makes me feel a bit safer.",
            "I can do that.",
        ),
        "ack": (
            "That sounds really frightening.",
            "I understand why you feel scared.",
            "I am here with you, that sounds scary.",
        ),
        "validate": (
            "Feeling afraid when things are uncertain is very human.",
            "It is natural to worry about something this important.",
            "Your fear makes sense.",
        ),
    },
    "surprised": {
        "open": ("Wow,", "No way,", "Wait,", "Oh my goodness,", "Can you believe it,"),
        "feel_mild": (
            "I did not see that coming.",
            "It caught me off guard.",
            "I am still a bit stunned.",
        ),
        "feel_strong": (
            "I am completely shocked!",
            "I still cannot believe it happened!",
            "It came totally out of nowhere!",
        ),
        "react": (
            "Yes, I guess I need a moment.",
            "That is a good idea.",
            "Right, let me think about that.",
        ),
        "ack": (
            "Wow, that is really unexpected!",
            "What a surprise!",
            "That must have caught you off guard.",
        ),
        "validate": (
            "It is normal to feel a little stunned after news like that.",
            "Big surprises take time to sink in.",
        ),
    },
    "disgusted": {
        "open": ("Ugh,", "Gross,", "Honestly,", "That was awful,", "Yuck,"),
        "feel_mild": (
            "It really put me off.",
            "I found it pretty distasteful.",
            "It left a bad taste.",
        ),
        "feel_strong": (
            "I am completely disgusted.",
            "It made me feel sick.",
            "I cannot even look at it.",
        ),
        "react": (
            "Yeah, I should step away from it.",
            "Okay, that makes sense.",
            "I will do that.",
        ),
        "ack": (
            "That sounds really unpleasant.",
            "Ugh, I understand why that bothers you.",
            "That sounds awful to deal with.",
        ),
        "validate": (
            "It is fair to be put off by that.",
            "Anyone would feel uncomfortable with that.",
            "Your reaction is understandable.",
        ),
    },
    "anxious": {
        "open": (
            "I keep worrying,",
            "I cannot stop thinking,",
            "I am on edge,",
            "My mind is racing,",
            "I feel tense,",
        ),
        "feel_mild": (
            "I feel a bit restless.",
            "It keeps me up at night.",
            "I cannot really focus.",
        ),
        "feel_strong": (
            "I am so anxious I feel sick.",
            "I cannot breathe properly when I think about it.",
            "It is all I can think about.",
        ),
        "react": (
            "Okay, one step at a time.",
            "I can try that tonight.",
            "That sounds manageable.",
        ),
        "ack": (
            "That sounds really stressful.",
            "I can tell this is weighing on you.",
            "It sounds like your mind has been working overtime.",
        ),
        "validate": (
            "Worrying about something that matters to you is natural.",
            "It makes sense to feel tense with so much unknown.",
        ),
    },
}

EMOTION_ALIASES: dict[str, str] = {
    "happiness": "happy",
    "joy": "happy",
    "joyful": "happy",
    "excited": "happy",
    "sadness": "sad",
    "anger": "angry",
    "fear": "fearful",
    "afraid": "fearful",
    "scared": "fearful",
    "surprise": "surprised",
    "disgust": "disgusted",
    "calm": "neutral",
    "worried": "anxious",
    "nervous": "anxious",
}

# Assistant phrasing that does not depend on the emotion.
HELP_LEADS = (
    "One thing that might help is to {step}.",
    "If you feel up to it, you could {step}.",
    "Maybe try to {step}.",
    "A small next step could be to {step}.",
    "Would it help to {step}?",
    "Something people often find useful is to {step}.",
    "It could be worth trying to {step}.",
    "What if you tried to {step}?",
    "For today, maybe just {step}.",
    "When you are ready, you might {step}.",
)
QUESTIONS = (
    "How are you feeling about it right now?",
    "What part of it weighs on you the most?",
    "Is there anything that would make today a little easier?",
    "Do you want to tell me more about what happened?",
    "Who else knows about this?",
    "What would feel like a good outcome for you?",
    "What do you need most right now?",
    "How have you been sleeping with all of this?",
    "Is there someone you trust who could be with you?",
    "What has helped you in hard moments before?",
    "How long has this been on your mind?",
    "What would you say to a friend in your place?",
)
DETAIL_LEADS = (
    "The thing is,",
    "Also,",
    "And",
    "What makes it worse is that",
    "Plus,",
    "To be honest,",
    "On top of that,",
    "The worst part is that",
    "Honestly,",
    "I should say that",
)
CLOSINGS = (
    "You do not have to figure it all out tonight.",
    "I am glad you talked about it.",
    "Be gentle with yourself while this settles.",
    "Take it one step at a time, you are doing better than you think.",
    "Remember that asking for support is a strength.",
    "I am here if you want to talk again.",
    "Whatever you decide, your feelings make sense.",
    "Small steps still count.",
    "Please check in with me tomorrow if you like.",
    "You have handled hard things before, and you can handle this too.",
)
ENCOURAGE = (
    "That sounds like a good plan.",
    "I really think you can handle this.",
    "It is great that you are open to trying.",
    "You are already taking it seriously, and that matters.",
    "I like that idea.",
    "That is a thoughtful way to look at it.",
    "Good, that sounds doable.",
    "I am glad you feel a little clearer.",
)

# Lexically neutral user turns (minimal pairs) say what happened and nothing about how it felt.
NEUTRAL_OPENERS = ("So,", "Okay, so", "Just to tell you,", "Here is the thing,", "Well,", "Listen,")
NEUTRAL_DETAIL_LEADS = ("Also,", "And", "Plus,", "I should say that", "The thing is,")
NEUTRAL_REACTS = ("Okay.", "Right.", "I see.", "Okay, I can try that.", "Alright, noted.")

# Words that name or show an emotion (feelings, evaluations, interjections), by stem: a word
# counts when it starts with one of these and is at most 5 letters longer (so "happiness" and
# "worried" count, "madrid" does not). Hand-made for this bank (its emotion phrasing, the
# assistant phrasing's feeling words) plus common affect words; lexically neutral user turns
# may hold none of them (validation).
EMOTION_WORDS = frozenset(
    """happ glad joy joyful delight thrill excit wonderful great amazing awesome fantastic
    love lovely proud pleased smil laugh celebrat congratulat yay hooray
    sad unhapp sorrow cry crie tear heartbr grief griev depress lonel miserab
    hurt pain upset gloom disappoint hopeless
    angr anger furious fury mad annoy irritat rage outrag hate frustrat scream unfair
    unbeliev ridiculous
    scar afraid fear terrif frighten nervous worr anxi panic dread alarm tense uneas
    surpris shock stun amaz astonish wow unexpect
    disgust gross yuck ugh sick nause revolt awful horrib terrib nasty vile distast
    calm relax relie stress overwhelm emotion feel felt""".split()
)
# Words a stem would catch that carry no emotion ("tear" also means to rip).
NOT_EMOTION_WORDS = frozenset(
    "happen happens happened made madam madrid painter painters paint paints painted tear "
    "tears downtown".split()
)
_WORD = re.compile(r"[a-z']+")


def emotion_words_in(text: str) -> list[str]:
    """The words of ``text`` that the emotion lexicon (``EMOTION_WORDS``) flags, in order."""
    found = []
    for word in _WORD.findall(text.lower()):
        word = word.strip("'")
        if word in NOT_EMOTION_WORDS:
            continue
        if any(word.startswith(stem) and len(word) - len(stem) <= 5 for stem in EMOTION_WORDS):
            found.append(word)
    return found


def phrases_for(emotion: str) -> dict[str, tuple[str, ...]]:
    """The phrasing of an emotion (aliases resolved; unknown emotions use the neutral phrasing)."""
    key = EMOTION_ALIASES.get(emotion.lower(), emotion.lower())
    return EMOTION_PHRASES.get(key, EMOTION_PHRASES["neutral"])


def situation_by_name(name: str) -> Situation:
    """The built-in situation called ``name``; ValueError lists the known names otherwise."""
    for s in SITUATIONS:
        if s.name == name:
            return s
    raise ValueError(f"unknown situation {name!r}; known: {', '.join(s.name for s in SITUATIONS)}")


def persona_by_name(name: str) -> Persona:
    """The built-in persona called ``name``; ValueError lists the known names otherwise."""
    for p in PERSONAS:
        if p.name == name:
            return p
    raise ValueError(f"unknown persona {name!r}; known: {', '.join(p.name for p in PERSONAS)}")
