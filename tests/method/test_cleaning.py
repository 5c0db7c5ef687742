"""Taking wrappers off replies: what real models put around a rewrite, and what stays."""

from __future__ import annotations

import pytest

from evol.method.cleaning import Cleaned, clean_reply, clean_rewrite

REWRITE = "Explain photosynthesis in three steps, with one example per step."


@pytest.mark.parametrize(
    ("reply", "stripped"),
    [
        (f"Sure! Here is the rewritten instruction:\n{REWRITE}", ["preamble"]),
        (f"Certainly. Here's a more complex version of the prompt: {REWRITE}", ["preamble"]),
        (f"Here is the revised version, with one more constraint:\n\n{REWRITE}", ["preamble"]),
        (f"Certainly!\n{REWRITE}", ["preamble"]),
        (f"New instruction: {REWRITE}", ["label"]),
        (f"**Rewritten prompt:** {REWRITE}", ["label"]),
        (f"#Rewritten Prompt#:\n{REWRITE}", ["label"]),
        (f"The new instruction is: {REWRITE}", ["label"]),
        (f"My rewritten prompt reads:\n{REWRITE}", ["label"]),
        (f"## New Instruction\n\n{REWRITE}", ["preamble"]),  # a heading line that only labels it
        (f"[Rewritten Prompt]\n{REWRITE}", ["preamble"]),
        (f"Step 1: add examples.\n\nFinal rewritten prompt:\n{REWRITE}", ["preamble"]),
        (f"Rewritten: {REWRITE}", ["label"]),
        (f"As requested, here is a harder version of the task:\n\n{REWRITE}", ["preamble"]),
        (f"I've rewritten the prompt to ask for examples.\n\n{REWRITE}", ["preamble"]),
        (f"---\n\n{REWRITE}\n\n---", ["rules"]),
        (f"*{REWRITE}*", ["quotes"]),
        (f"{REWRITE} Let me know if you want a different length!", ["afterword"]),
        (f"{REWRITE}\nIs this what you had in mind?", ["afterword"]),
        (f"{REWRITE} Want a harder version? Just let me know!", ["afterword"]),
        (f"{REWRITE} Happy learning! \U0001f331", ["afterword"]),
        (f"{REWRITE} (I added the step count to make it more specific.)", ["afterword"]),
        (f"{REWRITE} If that is too long, I can shorten it.", ["afterword"]),
        (f"{REWRITE}\n\nInput: N/A", ["echoed input"]),
        (f"{REWRITE}\n<noinput>", ["echoed input"]),
        (f"{REWRITE} No input required.", ["echoed input"]),
        (f"{REWRITE}\n\n### Context\n(none)", ["echoed input"]),
        (f'"{REWRITE}"', ["quotes"]),
        (f"\u201c{REWRITE}\u201d", ["quotes"]),
        (f"```\n{REWRITE}\n```", ["code fence"]),
        (f"```text\n{REWRITE}\n```", ["code fence"]),
        (f"<think>They want it harder.\nAdd steps.</think>\n\n{REWRITE}", ["<think> block"]),
        (f"<thinking>Plan.</thinking>{REWRITE}", ["<thinking> block"]),
        (f"Okay, the user wants more.</think>\n{REWRITE}", ["ending in </think>"]),
        (
            f'<think>x</think>Sure! Here is the new instruction:\n**New instruction:** "{REWRITE}"',
            ["<think> block", "preamble", "label", "quotes"],
        ),
        (f'```\n"{REWRITE}"\n```', ["code fence", "quotes"]),
        (f"{REWRITE}\n\nThis version adds a step count and examples.", ["afterword"]),
        (f"{REWRITE}\n\n**Note:** I kept the original topic.", ["afterword"]),
        (f"{REWRITE}\n\nChanges made: added examples.\nKept the topic.", ["afterword"]),
    ],
)
def test_wrappers_come_off_and_the_detail_says_which(reply: str, stripped: list[str]) -> None:
    cleaned = clean_rewrite(reply)
    if not stripped:
        assert cleaned.text == reply.strip() and cleaned.detail is None
        return
    assert cleaned.text == REWRITE
    assert len(cleaned.stripped) == len(stripped)
    for taken, expected in zip(cleaned.stripped, stripped, strict=True):
        assert expected in taken
    assert cleaned.detail.startswith("stripped ")


@pytest.mark.parametrize(
    "instruction",
    [
        "Here is a list of fruits: apple, pear, fig. Sort them by sugar content.",
        'Explain the phrase "carpe diem" and give "two" examples.',
        "Write a function:\n```python\ndef f(x):\n    return x\n```\nthat also handles None.",
        "Sure-footedness: what makes goats good climbers?",
        "The task is simple: list three primes.",
        "'Tis the season: write a short poem.",
        "Questions: 1) why is the sky blue? 2) why is the sea salty?",
        "Summarize the text.\n\nThe text is a short story about a lighthouse keeper.",
        "Write a poem.\n\nThis poem should rhyme and have four lines.",
        "Answer the question below.\n\nThe question is about tides and the moon.",
        "Read the instruction manual excerpt.\n\nThe instruction manual says to reboot first.",
        # What a closing line or an echoed input looks like, as the task's own words.
        "Write an email to a client that ends with 'Let me know if you have questions.'",
        "Write a note for a colleague. End it with this line:\nLet me know what you think.",
        "Plan a three-day trip to Rome. I hope to see the Colosseum.",
        "Write a product description. This should be under 100 words.",
        "Describe the water cycle.\n\nNote: the answer must be in French.",
        "List the data types in this table.\n\nData: name (text), age (integer)",
        "Fill in the form field labelled 'Input: N/A' with a sensible default.",
        'Explain the quote "Hope this helps" as used in customer service emails.',
        '"Describe a sunset without the words "beautiful" or "orange"." is the task: do it.',
    ],
)
def test_a_real_instruction_is_left_as_it_is(instruction: str) -> None:
    cleaned = clean_rewrite(instruction)
    assert (cleaned.text, cleaned.stripped) == (instruction, ())


def test_an_unclosed_think_block_leaves_nothing() -> None:
    cleaned = clean_rewrite("<think>I will first consider what the user wants and")
    assert cleaned.text == "" and "never closed" in cleaned.detail


def test_a_copy_of_the_input_is_taken_out_of_the_rewrite() -> None:
    data = "Name, Age\nAda, 36\nAlan, 41"
    cleaned = clean_rewrite(f"Sort the table below by age, oldest first.\n{data}", data)
    assert cleaned.text == "Sort the table below by age, oldest first."
    assert "a copy of the input" in cleaned.detail
    short = "x = 1"  # too short to tell a copy from a coincidence
    assert clean_rewrite("Explain why x = 1 here.", short).stripped == ()


def test_an_answer_only_loses_its_think_block() -> None:
    answer = "Sure! Here is the answer: photosynthesis turns light into sugar."
    assert clean_reply(answer).text == answer
    assert clean_reply(f"<think>hm</think>\n{answer}").text == answer


# -- each layer's detail and edges (found by mutation testing) ---------------------------------


@pytest.mark.parametrize(
    ("reply", "cleaned"),
    [
        ("<think>x</think>Hi", Cleaned("Hi", ("a <think> block",))),
        ("<think>x</think>", Cleaned("", ("a <think> block",))),  # closed at the very end
        ("<THINKING>x</Thinking>", Cleaned("", ("a <thinking> block",))),
        ("<think>x", Cleaned("", ("a <think> block (never closed)",))),
        ("Hi", Cleaned("Hi", ())),
    ],
)
def test_a_reply_loses_its_think_block_and_says_so(reply: str, cleaned: Cleaned) -> None:
    assert clean_reply(reply) == cleaned


@pytest.mark.parametrize(
    ("reply", "cleaned"),
    [
        (
            "Sure! Here is the rewritten instruction: Do X",
            Cleaned("Do X", ("preamble 'Sure! Here is the rewritten instruction:'",)),
        ),
        ("Sure!\nDo X", Cleaned("Do X", ("preamble 'Sure!'",))),
        ("New instruction: Do X", Cleaned("Do X", ("label 'New instruction:'",))),
        # Nothing after the wrapper: the reply is left as it is (the leak rule reads it).
        ("New instruction:", Cleaned("New instruction:", ())),
        ("Here is the rewritten instruction:", Cleaned("Here is the rewritten instruction:", ())),
        # An afterword one character in still goes.
        ("X\n\nNote: this is harder", Cleaned("X", ("an afterword 'Note: this is harder'",))),
        (
            "Do X\n\nNote: I " + "n" * 80,
            Cleaned("Do X", (f"an afterword {'Note: I ' + 'n' * 52!r}",)),
        ),
        ("Do X\n\nNote: in French.", Cleaned("Do X\n\nNote: in French.", ())),  # the task's
        ("```\nDo X\n```", Cleaned("Do X", ("a code fence around the whole reply",))),
        ('"Do X"', Cleaned("Do X", ("quotes around the whole reply",))),
        ('""', Cleaned("", ("quotes around the whole reply",))),
        ('"', Cleaned('"', ())),
        # Quotes that also open (or close) inside are not one pair around the whole reply.
        ("\u201cSay \u201chi to them\u201d", Cleaned("\u201cSay \u201chi to them\u201d", ())),
        ("\u201cSay hi\u201d to them\u201d", Cleaned("\u201cSay hi\u201d to them\u201d", ())),
    ],
)
def test_each_layer_of_a_rewrite_comes_off_and_is_named(reply: str, cleaned: Cleaned) -> None:
    assert clean_rewrite(reply) == cleaned


def test_eight_layers_come_off_and_a_ninth_is_left() -> None:
    # The loop's bound (MAX_LAYERS): a ninth layer stays, for the rules to read.
    assert clean_rewrite("Okay!\n" * 9 + "Do X") == Cleaned(
        "Okay!\nDo X", ("preamble 'Okay!'",) * 8
    )


def test_every_layer_of_a_wrapped_rewrite_comes_off() -> None:
    inner = '```\n"*New instruction: Do X*"\n```'
    reply = f"Sure!\nHere is the rewritten instruction:\n---\n{inner}\n---\n\nNote: this is harder."
    assert clean_rewrite(reply + "\n\nHope this helps! Thanks!\nInput: N/A") == Cleaned(
        "Do X",
        (
            "preamble 'Sure!\\nHere is the rewritten instruction:'",
            "an afterword 'Note: this is harder.\\n\\nHope this helps! Thanks!\\nInput: N/A'",
            "rules around the whole reply",
            "a code fence around the whole reply",
            "quotes around the whole reply",
            "quotes around the whole reply",
            "label 'New instruction:'",
        ),
    )


@pytest.mark.parametrize(
    ("input_text", "cleaned"),
    [
        ("a" * 20, Cleaned("Sort these:", ("a copy of the input",))),
        ("a" * 19, Cleaned("Sort these: " + "a" * 20, ())),
    ],
)
def test_a_copy_of_an_input_of_20_characters_or_more_comes_off(
    input_text: str, cleaned: Cleaned
) -> None:
    assert clean_rewrite("Sort these: " + "a" * 20, input_text) == cleaned


def test_without_an_input_nothing_is_taken_for_a_copy_of_it() -> None:
    assert clean_rewrite("Sort XXXX") == Cleaned("Sort XXXX", ())


# -- found by the third mutation round ---------------------------------------------------------


# -- cleaning a rewrite: quotes come off only as one pair, and nothing of the task with them ----

COPIED = "The river carved a deep canyon over many years."


@pytest.mark.parametrize(
    ("reply", "input_text", "rewrite"),
    [
        # The outer quotes are one pair only when the inner ones open and close in turn.
        (
            '"Write "" for an empty value in the table"',
            "",
            'Write "" for an empty value in the table',
        ),
        ('"Translate "x "a"b" y" into French"', "", '"Translate "x "a"b" y" into French"'),
        ('""Hello" is a greeting, and "bye"', "", '""Hello" is a greeting, and "bye"'),
        # In single quotes, an apostrophe within or at the end of a word is no quote...
        ("'Explain Rutherford's model of the atom'", "", "Explain Rutherford's model of the atom"),
        ("'I'm told to list three rivers'", "", "I'm told to list three rivers"),
        ("'Summarize O'Neill's first play'", "", "Summarize O'Neill's first play"),
        ("'Explain the laws of Newton's'", "", "Explain the laws of Newton's"),
        ("'Grade the students' essays fairly'", "", "Grade the students' essays fairly"),
        # ...but a quote that opens and never closes, or one doubled at an end, is.
        ("'Explain Rutherford's 'model'", "", "'Explain Rutherford's 'model'"),
        ("''hello' is how the letter starts'", "", "''hello' is how the letter starts'"),
        ("'Grade the essays of the students''", "", "'Grade the essays of the students''"),
        # A quote opens after a space or a bracket, or at the very start.
        ('""Hi" is what she said first"', "", '"Hi" is what she said first'),
        ('"See X"Y" in the table"', "", '"See X"Y" in the table"'),
        # Emphasis marks inside: the outer ones are not one pair either.
        ("*Explain *why* the sky is blue*", "", "*Explain *why* the sky is blue*"),
        # A copy of the input after the rewrite goes; the rewrite's own last character stays.
        (
            f"Summarize the passage in two lines :{COPIED}",
            COPIED,
            "Summarize the passage in two lines :",
        ),
        (
            f"Summarize the passage in two lines.\n\nInput:\n```\n{COPIED}\n```",
            COPIED,
            "Summarize the passage in two lines.",
        ),
        (
            "Summarize the passage in two lines.\n\nInput:\n```text\nN/A\n```",
            "",
            "Summarize the passage in two lines.",
        ),
    ],
)
def test_a_rewrite_loses_its_wrappers_and_nothing_of_its_own(
    reply: str, input_text: str, rewrite: str
) -> None:
    try:
        from evol.method.cleaning import clean_rewrite
    except ImportError:  # 4f7dc9e, before the method package
        from evol.cleaning import clean_rewrite

    assert clean_rewrite(reply, input_text).text == rewrite


@pytest.mark.parametrize(
    ("reply", "text", "detail"),
    [
        ("<think>a</think>Explain X.", "Explain X.", "stripped a <think> block"),
        ("<think>only thinking</think>", "", "stripped a <think> block"),
        ("<THINK>shouting</THINK> Explain X.", "Explain X.", "stripped a <think> block"),
        ("<think>never done", "", "stripped a <think> block (never closed)"),
        (
            "Sure! Here is the new prompt: Explain X.",
            "Explain X.",
            "stripped preamble 'Sure! Here is the new prompt:'",
        ),
        ("Certainly!\nExplain X.", "Explain X.", "stripped preamble 'Certainly!'"),
        ("Prompt: Explain X.", "Explain X.", "stripped label 'Prompt:'"),
        ("```\nExplain X.\n```", "Explain X.", "stripped a code fence around the whole reply"),
        ('"Explain X."', "Explain X.", "stripped quotes around the whole reply"),
        ('""', "", "stripped quotes around the whole reply"),
        (
            "A\n\nThis version adds " + "a case " * 20,
            "A",
            "stripped an afterword " + repr(("This version adds " + "a case " * 20).strip()[:60]),
        ),
    ],
)
def test_cleaning_details(reply: str, text: str, detail: str) -> None:
    cleaned = clean_rewrite(reply)
    assert (cleaned.text, cleaned.detail) == (text, detail)


def test_a_wrapper_with_nothing_inside_is_left_for_the_rules() -> None:
    assert clean_rewrite("New instruction:").text == "New instruction:"


def test_curly_quotes_inside_keep_the_outer_ones() -> None:
    reply = "\u201cSay \u201d twice\u201d"
    assert clean_rewrite(reply).text == reply


@pytest.mark.parametrize(("length", "taken"), [(19, False), (20, True)])
def test_an_input_copied_into_the_rewrite_from_20_characters(length: int, taken: bool) -> None:
    data = "x" * length
    cleaned = clean_rewrite(f"Sort this: {data}", data)
    assert (cleaned.text == "Sort this:") is taken
    assert (cleaned.detail == "stripped a copy of the input") is taken


def test_an_answer_keeps_what_was_taken_off_it() -> None:
    assert clean_reply("<think>x</think>Yes.").stripped == ("a <think> block",)
