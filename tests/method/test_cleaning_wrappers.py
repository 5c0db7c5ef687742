"""Cleaning never cuts real content (issue #24, item 4): for any clean instruction and any
wrapper the cleaner takes off (a think block, a preamble or label, quotes or a fence, closing
words to the user, an echoed input or placeholder), cleaning the wrapped reply gives back the
instruction unchanged, and cleaning the bare instruction changes nothing.

The instructions are built from the shapes real ones take: plain and compound sentences,
questions, numbered lists, code fences, tables, a "Note:" paragraph that belongs to the task,
and tasks that themselves speak of closing lines ("... that ends with 'Let me know if you have
questions.'").
"""

from __future__ import annotations

from hypothesis import example, given, settings
from hypothesis import strategies as st

from evol.method.cleaning import Cleaned, clean_rewrite

SUBJECTS = [
    "how tides work",
    "the causes of the French Revolution",
    "why bread goes stale",
    "the difference between TCP and UDP",
    "a budget for a student earning 900 euros a month",
    "the rules of chess castling",
    "how vaccines train the immune system",
]
SENTENCES = st.one_of(
    st.builds("Explain {} in {} steps.".format, st.sampled_from(SUBJECTS), st.integers(2, 9)),
    st.builds("Describe {} for a ten-year-old.".format, st.sampled_from(SUBJECTS)),
    st.builds(
        "What is the most common mistake people make about {}?".format, st.sampled_from(SUBJECTS)
    ),
    st.builds(
        "Compare {} with {}, and say which matters more.".format,
        st.sampled_from(SUBJECTS),
        st.sampled_from(SUBJECTS),
    ),  # fmt: skip
    st.sampled_from(
        [
            "Write an email to a client that ends with 'Let me know if you have questions.'",
            'Write a support reply whose last line is "Hope this helps!" and explain why it works.',
            'Write a short story in which the hero says "Thanks!" to a stranger.',
            "Explain when a customer service agent should write 'Feel free to reach out'.",
            "Write a note for a colleague, signed off with 'Cheers!', about the late report.",
            "Plan a three-day trip to Rome. I hope to see the Colosseum.",
            "Write a product description. This should be under 100 words.",
            "Rewrite the sentence below in the passive voice.",
            "Is a tomato a fruit or a vegetable? Justify the answer botanically.",
            "List five uses of baking soda, each with a one-line reason.",
            'Translate "Let me know if you need anything" into French and German.',
            "Give the output of the program, and explain each line.",
        ]
    ),
)
BLOCKS = st.sampled_from(
    [
        "1. Stay under 250 words.\n2. Mention one brewing method.\n3. End with a question.",
        "```python\ndef average(xs):\n    return sum(xs) / len(xs)\n```",
        "| Pet | Lifespan |\n| --- | --- |\n| Rabbit | 8-12 y |\n| Goldfish | 10 y |",
        "Note: the answer must be written in French, at a level for a twelve-year-old.",
        "- the size of the room\n- the budget\n- the deadline",
        "$A = \\pi r^2$ must be derived, not quoted.",
    ]
)
INSTRUCTIONS = st.builds(
    lambda first, more, block: "\n\n".join(
        part for part in (" ".join([first, *more]), block) if part
    ),
    SENTENCES,
    st.lists(SENTENCES, max_size=2),
    st.one_of(st.just(""), BLOCKS),
)
INPUT = "Cities that plant more trees see lower energy bills in summer."

OPENINGS = st.sampled_from(
    [
        "",
        "<think>The user wants it harder. Add a constraint.</think>\n",
        "Sure! Here is the rewritten instruction:\n",
        "Certainly! Below is a rewritten version of the prompt that adds depth:\n\n",
        "As requested, here is a more difficult version of the instruction:\n\n",
        "Okay! Here's my attempt:\n\n",
        "**New instruction:** ",
        "### Rewritten Prompt\n\n",
        "[Rewritten Prompt]\n",
        "Rewritten: ",
        "Step 1: list the methods.\nStep 2: apply them.\n\nFinal rewritten prompt:\n",
        "I've rewritten the prompt to require a worked example.\n\n",
    ]
)
AROUND = st.sampled_from(
    ["{}", '"{}"', "*{}*", "```\n{}\n```", "```text\n{}\n```", "\u201c{}\u201d", "\u00ab{}\u00bb"]
)
CLOSINGS = st.sampled_from(
    [
        "Let me know if you'd like any further changes.",
        "Hope this helps!",
        "This version adds a word limit and a target audience.",
        "I added the night-time condition to make it more complex.",
        "Would you like me to make it even more challenging?",
        "Is this what you had in mind?",
        "Feel free to tweak it.",
        "If you want, I can write another version focusing on cost instead.",
        "I can also translate this into Spanish if needed.",
        "Good luck with your task!",
        "Happy writing! \u270d\ufe0f",
        "(Sorry if this is too long, I can shorten it.)",
        "Want a harder version? Just let me know!",
    ]
)
ECHOES = st.sampled_from(
    ["Input: N/A", "(none)", "<noinput>", "Input: (none)", "Context: N/A", "Input:",
     "[No input]", "No input required.", f"Input: {INPUT}", f"### Input\n{INPUT}",
     f"Text: {INPUT}"]
)  # fmt: skip


def wrap(instruction: str, opening: str, around: str, closings: list[str], echo: str) -> str:
    """`instruction` inside the wrappers, each one separated as models separate them."""
    reply = opening + around.format(instruction)
    for closing in closings:
        glue = " " if reply.endswith((".", "?", "!")) and "\n" not in closing else "\n\n"
        reply += glue + closing
    return reply + ("\n\n" + echo if echo else "")


@settings(max_examples=400, deadline=None)
@given(
    INSTRUCTIONS,
    OPENINGS,
    AROUND,
    st.lists(CLOSINGS, max_size=2),
    st.one_of(st.just(""), ECHOES),
)
@example(
    "Write an email to a client that ends with 'Let me know if you have questions.'",
    "Sure! Here is the rewritten instruction:\n",
    "{}",
    ["Let me know if you'd like any further changes."],
    "Input: N/A",
)
def test_a_clean_instruction_comes_back_from_any_wrapper(
    instruction: str, opening: str, around: str, closings: list[str], echo: str
) -> None:
    reply = wrap(instruction, opening, around, closings, echo)
    cleaned = clean_rewrite(reply, INPUT)
    assert cleaned.text == instruction
    assert (cleaned.stripped == ()) is (reply == instruction)


@settings(max_examples=300, deadline=None)
@given(INSTRUCTIONS)
def test_a_clean_instruction_is_left_as_it_is(instruction: str) -> None:
    assert clean_rewrite(instruction, INPUT) == Cleaned(instruction, ())
    assert clean_rewrite(instruction) == Cleaned(instruction, ())
