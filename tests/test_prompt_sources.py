"""Prompts from where users keep them: Parquet, Arrow, CSV, saved dataset folders, Dataset objects,
cached Hub datasets (the offline failure), with prompt / messages / id fields, templates for
two-field sets, ShareGPT conversations and HH-RLHF transcripts. Every source is built here from a
few rows."""

import json
import time

import pytest

datasets = pytest.importorskip("datasets")
pa = pytest.importorskip("pyarrow")

import secateurs  # noqa: E402
from secateurs.api import resolve_prompts  # noqa: E402
from secateurs.errors import SecateursError  # noqa: E402
from secateurs.prompts import load_prompts  # noqa: E402

ALPACA = {"instruction": ["Give me a tip for sleep.", "Translate to French.", "Name a green tea."],
          "input": ["", "good night", None],
          "uid": ["s", "t", "g"]}
TEMPLATE = "{instruction}\n\n{input}"


def texts(prompts):
    return [p.text for p in prompts]


def user(text):
    return {"role": "user", "content": text}


def assistant(text):
    return {"role": "assistant", "content": text}


# --- files the `datasets` library reads ----------------------------------------------------------------

def test_parquet_with_a_two_field_template(tmp_path):
    path = tmp_path / "alpaca.parquet"
    datasets.Dataset.from_dict(ALPACA).to_parquet(str(path))
    prompts = load_prompts(path, prompt_field=TEMPLATE, id_field="uid")
    assert [p.id for p in prompts] == ["s", "t", "g"]
    # an empty or null `input` leaves no trailing blank lines
    assert texts(prompts) == ["Give me a tip for sleep.", "Translate to French.\n\ngood night", "Name a green tea."]
    # without fields, `instruction` + `input` is the default, and ids are row positions
    assert [(p.id, p.text) for p in resolve_prompts(str(path))] == [(str(i), t) for i, t in enumerate(texts(prompts))]


def test_arrow_file_with_question_column_and_id_field(tmp_path):
    table = pa.table({"question": ["What is tea?", "Why sleep?"], "qid": [7, 8]})
    path = tmp_path / "qa.arrow"
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    prompts = load_prompts(path, id_field="qid")
    assert [(p.id, p.text) for p in prompts] == [("7", "What is tea?"), ("8", "Why sleep?")]


def test_csv_with_a_prompt_column_and_a_template(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text("id,prompt,context\na,how do i make tea,\nb,what helps sleep,at night\n")
    assert [(p.id, p.text) for p in load_prompts(path)] == [("a", "how do i make tea"), ("b", "what helps sleep")]
    prompts = load_prompts(path, prompt_field="{prompt}\n\n{context}")
    assert texts(prompts) == ["how do i make tea", "what helps sleep\n\nat night"]


def test_jsonl_takes_the_same_fields(tmp_path):
    path = tmp_path / "alpaca.jsonl"
    rows = [{"instruction": i, "input": x, "uid": u} for i, x, u in zip(*ALPACA.values())]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert texts(load_prompts(path))[1] == "Translate to French.\n\ngood night"
    assert [p.id for p in load_prompts(path, prompt_field="instruction", id_field="uid")] == ["s", "t", "g"]


# --- dataset folders and objects -----------------------------------------------------------------------

def test_saved_folder_with_splits(tmp_path):
    train = datasets.Dataset.from_dict({"prompt": ["how do i make tea", "what helps sleep"]})
    test = datasets.Dataset.from_dict({"prompt": ["name a green tea"]})
    folder = tmp_path / "saved"
    datasets.DatasetDict({"train": train, "test": test}).save_to_disk(str(folder))
    assert texts(load_prompts(folder)) == ["how do i make tea", "what helps sleep"]  # "train" by default
    assert texts(load_prompts(str(folder), split="test")) == ["name a green tea"]
    assert texts(resolve_prompts(str(folder), split="test")) == ["name a green tea"]
    with pytest.raises(SecateursError, match=r"no split 'dev'; its splits are: 'train', 'test'"):
        load_prompts(folder, split="dev")

    other = tmp_path / "no-train"
    datasets.DatasetDict({"validation": train, "test": test}).save_to_disk(str(other))
    with pytest.raises(SecateursError, match=r"has the splits 'validation', 'test': choose one with split="):
        load_prompts(other)
    only = tmp_path / "only-test"
    datasets.DatasetDict({"test": test}).save_to_disk(str(only))
    assert texts(load_prompts(only)) == ["name a green tea"]  # the only split


def test_dataset_objects_are_read_directly():
    ds = datasets.Dataset.from_dict(ALPACA)
    assert texts(resolve_prompts(ds))[0] == "Give me a tip for sleep."
    assert [p.id for p in resolve_prompts(ds, id_field="uid")] == ["s", "t", "g"]
    dd = datasets.DatasetDict({"train": ds, "test": ds.select([1])})
    assert texts(load_prompts(dd, prompt_field="instruction", split="test")) == ["Translate to French."]
    with pytest.raises(SecateursError, match="not a DatasetDict: it has no split 'test'"):
        resolve_prompts(ds, split="test")


# --- conversations -------------------------------------------------------------------------------------

def test_a_messages_column_drops_the_trailing_assistant_turn():
    ds = datasets.Dataset.from_dict({"chat": [[user("hi"), assistant("hello"), user("a tip for sleep?"),
                                               assistant("go to bed early")]]})
    [p] = load_prompts(ds, messages_field="chat")
    assert [m["role"] for m in p.messages] == ["user", "assistant", "user"] and p.text == "a tip for sleep?"
    # the native `messages` field keeps its rule: it must end with the user's turn
    native = datasets.Dataset.from_dict({"messages": [[user("hi"), assistant("hello")]]})
    with pytest.raises(SecateursError, match="last message must be from the user"):
        load_prompts(native)
    assert load_prompts(native, messages_field="messages")[0].messages == (user("hi"),)


def test_sharegpt_conversations():
    ds = datasets.Dataset.from_dict({"conversations": [[
        {"from": "system", "value": "Be brief."}, {"from": "human", "value": "How do I make tea?"},
        {"from": "gpt", "value": "Steep it."}, {"from": "human", "value": "And green tea?"},
        {"from": "gpt", "value": "Cooler water."}]]})
    [p] = load_prompts(ds)  # `conversations` is a default field
    assert p.messages == ({"role": "system", "content": "Be brief."}, user("How do I make tea?"),
                          assistant("Steep it."), user("And green tea?"))
    bad = datasets.Dataset.from_dict({"conversations": [[{"from": "robot", "value": "beep"}]]})
    with pytest.raises(SecateursError, match="is from 'robot'"):
        load_prompts(bad)


def test_hh_rlhf_chosen_transcript(tmp_path):
    chosen = ("\n\nHuman: What should I drink before bed?\n\nAssistant: Herbal tea.\n\n"
              "Human: Which one?\n\nAssistant: Chamomile is a classic.")
    path = tmp_path / "hh.parquet"
    datasets.Dataset.from_dict({"chosen": [chosen], "rejected": ["\n\nHuman: x\n\nAssistant: y"]}).to_parquet(str(path))
    [p] = load_prompts(path)  # `chosen` is a default field: parsed up to the last Human turn
    assert p.messages == (user("What should I drink before bed?"), assistant("Herbal tea."), user("Which one?"))
    with pytest.raises(SecateursError, match="not a 'Human: ... Assistant: ...' transcript"):
        load_prompts(datasets.Dataset.from_dict({"t": ["just text"]}), messages_field="t")


# --- errors ---------------------------------------------------------------------------------------------

def test_a_missing_field_names_the_fields_that_exist(tmp_path):
    path = tmp_path / "alpaca.parquet"
    datasets.Dataset.from_dict(ALPACA).to_parquet(str(path))
    for kwargs, what in [({"prompt_field": "text"}, "no field 'text' (prompt_field)"),
                         ({"messages_field": "chat"}, "no field 'chat' (messages_field)"),
                         ({"id_field": "key"}, "no field 'key' (id_field)"),
                         ({"prompt_field": "{instruction}\n{context}"}, "names 'context', which is not there")]:
        with pytest.raises(SecateursError, match="the fields are: 'instruction', 'input', 'uid'") as err:
            load_prompts(path, **kwargs)
        assert what in str(err.value) and str(path) in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(SecateursError, match=r"needs a 'prompt'.*the fields are: 'body', 'title'"):
        load_prompts(datasets.Dataset.from_dict({"title": ["t"], "body": ["b"]}))


def test_empty_prompts_and_duplicate_ids_are_named(tmp_path):
    path = tmp_path / "p.parquet"
    datasets.Dataset.from_dict({"prompt": ["tea", "  "]}).to_parquet(str(path))
    with pytest.raises(SecateursError, match="row 1: the prompt is empty"):
        load_prompts(path)
    with pytest.raises(SecateursError, match="duplicate prompt id 'x'"):
        load_prompts(datasets.Dataset.from_dict({"prompt": ["tea", "sleep"], "id": ["x", "x"]}))


def test_unreadable_tables_are_named(tmp_path):
    path = tmp_path / "broken.parquet"
    path.write_bytes(b"PAR1\x00\x15")
    with pytest.raises(SecateursError, match="cannot read prompt file .*broken.parquet' as parquet: ") as err:
        resolve_prompts(str(path))
    assert "\n" not in str(err.value)
    sheet = tmp_path / "p.xlsx"
    sheet.write_bytes(b"PK")
    with pytest.raises(SecateursError, match=r"\.xlsx files are not supported"):
        load_prompts(sheet)
    with pytest.raises(SecateursError, match="has no splits"):
        load_prompts(path, split="train")


def test_a_list_of_dicts_takes_the_same_fields():
    rows = [{"instruction": "Name a tea.", "input": "green", "key": "a"}, {"instruction": "Why sleep?", "key": "b"}]
    assert [(p.id, p.text) for p in resolve_prompts(rows, id_field="key")] == [("a", "Name a tea.\n\ngreen"),
                                                                               ("b", "Why sleep?")]
    with pytest.raises(SecateursError, match=r"prompt 1: no field 'input' \(prompt_field\)"):
        resolve_prompts(rows, prompt_field="input")


def test_a_hub_name_that_is_not_cached_fails_at_once(tmp_path):
    offline_before = datasets.config.HF_HUB_OFFLINE
    start = time.monotonic()
    for call in (lambda: load_prompts("hf:secateurs-tests/no-such-prompt-set"),
                 lambda: load_prompts("secateurs-tests/no-such-prompt-set"),
                 lambda: resolve_prompts("secateurs-tests/no-such-prompt-set", prompt_field="instruction")):
        with pytest.raises(SecateursError, match="is not in the local datasets cache") as err:
            call()
        assert "secateurs-tests/no-such-prompt-set" in str(err.value) and "\n" not in str(err.value)
    assert time.monotonic() - start < 10
    assert datasets.config.HF_HUB_OFFLINE == offline_before  # the switch is put back
    # a missing local file is still named as one, and a plain string is still a prompt
    with pytest.raises(SecateursError, match="prompt file not found"):
        load_prompts(tmp_path / "missing.parquet")
    assert texts(resolve_prompts("and/or")) == ["and/or"]


# --- end to end ------------------------------------------------------------------------------------------

def test_align_answers_a_dataset(tiny_policy):
    ds = datasets.Dataset.from_dict(ALPACA)
    results = secateurs.align(ds, policy=tiny_policy, reward="sentiment", method="sampling", max_new_tokens=4,
                              prompt_field=TEMPLATE, id_field="uid")
    assert [r.id for r in results] == ["s", "t", "g"]
    assert results[1].prompt == "Translate to French.\n\ngood night"
    assert all(r.cost.lm_tokens > 0 for r in results)


# --- issue 20: ambiguous lines, broken CSV, paths that are not files -------------------------------------

def test_a_line_with_both_prompt_and_messages_is_refused_naming_file_and_line(tmp_path, monkeypatch, capsys):
    from cli_main import run_main

    path = tmp_path / "both.jsonl"
    path.write_text(json.dumps({"prompt": "a"}) + "\n"
                    + json.dumps({"prompt": "b", "messages": [user("c")]}) + "\n")
    with pytest.raises(SecateursError, match="both 'prompt' and 'messages'") as err:
        load_prompts(path)
    assert f"{path} line 2" in str(err.value) and "\n" not in str(err.value)
    code, stderr = run_main(monkeypatch, capsys, "run", "--method", "sampling", "--prompts", path, "--quiet",
                            "--out", tmp_path / "out.jsonl")
    assert code == 2 and f"{path} line 2: has both" in stderr and len(stderr.strip().splitlines()) == 1
    # naming the field settles it
    assert texts(load_prompts(path, prompt_field="prompt")) == ["a", "b"]
    with pytest.raises(SecateursError, match="both 'prompt' and 'messages'"):
        resolve_prompts({"prompt": "b", "messages": [user("c")]})


def test_a_csv_with_an_unterminated_quote_names_file_and_line(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text('prompt,id\nhello,0\n"unterminated,1\nworld,2\n')
    with pytest.raises(SecateursError, match="unterminated quote in the row starting at line 3") as err:
        load_prompts(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_a_path_that_is_not_a_regular_file_is_named_as_such(monkeypatch, capsys):
    from cli_main import run_main

    with pytest.raises(SecateursError, match="'/dev/null' is not a regular file") as err:
        load_prompts("/dev/null")
    assert "not found" not in str(err.value)
    code, stderr = run_main(monkeypatch, capsys, "run", "--method", "sampling", "--prompts", "/dev/null", "--quiet")
    assert code == 2 and "is not a regular file" in stderr and len(stderr.strip().splitlines()) == 1
