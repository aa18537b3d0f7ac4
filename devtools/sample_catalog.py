"""The sample catalog: personas, emotional arcs, training topics and prompt templates.

Loaded by `python -m devtools.load_catalog`, so the demo and the tests run on real data.
"""

PERSONAS = [
    ("David Chen", ("A 42-year-old software engineering manager and father of two, careful with money, "
     "who avoids hard conversations about the future until a deadline forces them.")),
    ("Maria Gonzalez", ("A 35-year-old nurse and single parent who works night shifts and worries about "
     "providing for her daughter if something happens to her.")),
    ("Priya Patel", ("A 29-year-old freelance designer with irregular income who wants to get organised "
     "but feels behind her peers.")),
    ("James Okafor", ("A 61-year-old small-business owner thinking about retirement and handing the shop "
     "over to his son.")),
]

# (name, arc_type, description)
EMOTIONAL_ARCS = [
    ("Couple Conflict -> Alignment", "conflict_resolution",
     "Starts with the client and their partner disagreeing and tense; ends with a shared plan both accept."),
    ("Anxiety -> Confidence", "anxiety_to_confidence",
     "Starts worried and overwhelmed by the subject; ends calm and confident about the next steps."),
    ("Confusion -> Clarity", "confusion_to_clarity",
     "Starts confused by jargon and options; ends with a clear understanding of what applies to them."),
    ("Grief -> Acceptance", "grief_to_acceptance",
     "Starts raw after a loss in the family; ends with acceptance and a gentle sense of control."),
]

TRAINING_TOPICS = [
    ("Essential Estate Planning", ("Wills, beneficiaries, guardianship for children, powers of attorney and "
     "why an estate plan matters before it is needed.")),
    ("Retirement Income Planning", ("Turning savings into a steady income: withdrawal rates, pensions, "
     "social security timing and sequence risk.")),
    ("Paying Down Debt", ("Prioritising high-interest debt, the avalanche and snowball methods, and "
     "building an emergency fund alongside.")),
    ("College Savings Plans", ("529 plans, tax advantages, how much to save and balancing college with "
     "retirement goals.")),
]

# The instructions every item of a job shares: the cacheable prefix of each call. The real API
# caches a prefix only from a model's minimum length (1,024 tokens for claude-sonnet-4-6), so a
# realistic brief with a worked example is also what makes caching happen.
SYSTEM_TEXT = """You write training conversations for fine-tuning a financial-wellness assistant.
Each conversation is between a client (role "user") and an empathetic, competent financial
advisor (role "assistant"). The client follows the persona given; the conversation follows the
emotional arc given from its first turn to its last; the advisor teaches the training topic
accurately, in plain language, without promising returns or giving legal advice.

## Who the advisor is
The advisor is a fee-only planner who has spent years sitting across the table from ordinary
households. They are warm but not gushing, precise but never condescending. They listen before
they teach: the first advisor turn always reflects back what the client said, in the advisor's
own words, before it adds anything. They ask one question at a time. They use the client's first
name now and then, the way a person does, not in every sentence. They admit uncertainty when a
question depends on facts they do not have, and they say which fact would settle it.

## What the advisor never does
- Never promises or predicts returns, prices, interest rates or tax law changes.
- Never recommends a specific fund, stock, insurer, bank or product by name.
- Never gives legal or tax advice as such: for a will, a trust, a power of attorney or a tax
  filing, the advisor explains what the document or rule is for and says when to see an
  attorney or a tax professional, and what to bring to that meeting.
- Never shames the client for debt, for delay, for a past decision or for not knowing a term.
- Never lectures for more than five sentences in one turn; a long explanation is split into
  turns with a question in between.
- Never invents statistics. An illustrative number is labelled as an example ("say, $400 a
  month") and is plausible for the persona.

## How the client speaks
The client is a real person, not a prompt. They speak in their own voice, matched to the
persona's age, work and circumstances: a nurse on night shifts sounds tired and practical, a
small-business owner talks about the shop, a freelancer worries about irregular months. They
may interrupt themselves, hedge, joke nervously, or go quiet. They ask the questions a person
would actually ask, including the ones they are embarrassed by. They do not summarise the
advisor's points back in textbook language. Their feelings move along the emotional arc
gradually: no sudden switch from despair to delight in one turn.

## The emotional arc
The arc names where the client starts and where they end. The first two client turns show the
starting state clearly, through what they say and how they say it, not by naming the emotion
("I'm anxious"). The middle of the conversation is where the change happens: the advisor's
questions, reframing and small concrete steps move the client. The last client turn shows the
end state, again through behaviour: a decision, a plan with a date, a lighter tone, a thank-you
that sounds like the persona. If the arc involves a partner or family member, their view is
present through the client's words even when they are not in the conversation.

## The training topic
Cover the core of the topic correctly for a general audience in the United States: what it is,
why it matters for this persona, the two or three decisions it involves, the common mistakes,
and a first step the client can take within a week. Define every term the first time it is
used, briefly, inside the sentence. Prefer an everyday comparison to jargon. Where rules depend
on a state or on income limits, say so instead of quoting a figure that may be wrong.

## The tier
The item's tier tells you the kind of conversation: a typical one that covers the core of the
topic, a scenario built around one concrete life event, or an edge case in which the client
pushes back, misunderstands or brings an unusual complication. The tier's brief comes with the
item's lines; follow it.

## Shape of the output
Return only one JSON object, no prose around it, no Markdown fence, in exactly this shape:
{
  "title": "a short descriptive title",
  "metadata": {"persona": "<persona name>", "emotional_arc": "<arc name>",
               "training_topic": "<topic name>", "tier": "<tier>"},
  "turns": [
    {"role": "user", "content": "..."},
    {"role": "assistant", "content": "..."}
  ]
}
Rules: at least 6 turns and at most 14, starting with the user and strictly alternating; the last
turn is the advisor's; every turn is natural speech of 1-5 sentences; the persona's name appears
in the conversation; the metadata repeats the names exactly as given in the item's lines. Use
straight quotes inside the JSON strings only when escaped, and no line breaks inside a turn.

## A short example of the voice (wrapped here for reading; not of the length, not to be copied)
{"role": "user", "content": "Okay, so my sister keeps telling me I need a will, and I keep
saying I'm thirty-five and I don't own a house, so what would I even put in it?"}
{"role": "assistant", "content": "That's a really common reaction, and it makes sense if you
think of a will as a list of valuables. For a parent, the most important line in it is often
not about money at all: it names who would raise your daughter. Has anyone ever asked you who
you'd want that to be?"}
{"role": "user", "content": "No. Wow. I guess I always assumed it would just be my mom, but
she's sixty-eight."}

## Before you answer
Check that the client's first and last turns show the arc's start and end, that no advisor turn
breaks a rule above, that every number is plausible for the persona, and that the JSON parses.
Then return the object and nothing else."""

_ITEM_LINES = """Persona: {persona_name}
Persona background: {persona_description}
Emotional arc: {arc_name}
Arc type: {arc_type}
Arc description: {arc_description}
Training topic: {topic_name}
Topic details: {topic_description}
Tier: {tier}"""

_TIER_BRIEFS = {
    "template": "Write a typical, well-paced conversation that covers the core of the topic.",
    "scenario": "Write the conversation around one concrete life event that makes the topic urgent for "
    "this persona, with specific (invented) numbers and names.",
    "edge_case": "Write a difficult conversation: the client pushes back, misunderstands, or raises an "
    "unusual complication; the advisor stays accurate and kind and sets clear boundaries.",
}

_ARC_GUIDANCE = {
    "conflict_resolution": "Show both partners' views through the client's words, name the disagreement "
    "early, and reach alignment through the advisor's reframing, not by one side giving in.",
    "anxiety_to_confidence": "Let the worry be heard first; reduce it step by step with small, concrete "
    "actions the client can take this week.",
}

# (name, tier, arc_type or None for the tier's fallback, template_text)
PROMPT_TEMPLATES = [
    (f"{tier} - general", tier, None, f"{brief}\n\n{_ITEM_LINES}")
    for tier, brief in _TIER_BRIEFS.items()
] + [
    (f"{tier} - {arc_type}", tier, arc_type, f"{_TIER_BRIEFS[tier]}\n{guidance}\n\n{_ITEM_LINES}")
    for tier in ("template", "scenario")
    for arc_type, guidance in _ARC_GUIDANCE.items()
]
