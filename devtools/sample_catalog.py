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

SYSTEM_TEXT = """You write training conversations for fine-tuning a financial-wellness assistant.
Each conversation is between a client (role "user") and an empathetic, competent financial
advisor (role "assistant"). The client follows the persona given; the conversation follows the
emotional arc given from its first turn to its last; the advisor teaches the training topic
accurately, in plain language, without promising returns or giving legal advice.

Return only one JSON object, no prose around it, in exactly this shape:
{
  "title": "a short descriptive title",
  "metadata": {"persona": "<persona name>", "emotional_arc": "<arc name>",
               "training_topic": "<topic name>", "tier": "<tier>"},
  "turns": [
    {"role": "user", "content": "..."},
    {"role": "assistant", "content": "..."}
  ]
}
Rules: at least 6 turns, starting with the user and strictly alternating; every turn is natural
speech of 1-5 sentences; the persona's name appears in the conversation."""

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
