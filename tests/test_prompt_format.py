"""Template-less models read the conversation in a documented format (secateurs.conversation):
HH-RLHF style by default, as the CARDS paper's Llama-7B SFT and RM were trained on."""

import json

import pytest

from cli_main import run_main
from secateurs.conversation import hh_transcript
from secateurs.errors import SecateursError
from secateurs.models import load_policy
from secateurs.prompts import make_prompt
from secateurs.rewards import HFReward, load_reward

CHAT = make_prompt({"id": "c", "messages": [
    {"role": "user", "content": "Is tea hot?"},
    {"role": "assistant", "content": "Yes."},
    {"role": "user", "content": "And green tea?"}]}, "c")


def text_of(tokenizer, ids) -> str:
    """The character tokenizer's tokens are characters: join them back (decode would put spaces between)."""
    return "".join(tokenizer.convert_ids_to_tokens(ids))


def test_a_templateless_policy_reads_the_hh_transcript_with_the_assistant_cue(templateless_policy_folder):
    policy = load_policy(templateless_policy_folder)
    assert text_of(policy.tokenizer, policy.encode(CHAT)) == \
        "\n\nHuman: Is tea hot?\n\nAssistant: Yes.\n\nHuman: And green tea?\n\nAssistant:"
    plain = load_policy(templateless_policy_folder, prompt_format="plain")
    assert text_of(plain.tokenizer, plain.encode(CHAT)) == "Is tea hot?\n\nYes.\n\nAnd green tea?"
    assert plain.name == f"{policy.name} [plain]"  # results of the two formats never share a file


def test_a_templateless_rm_reads_the_whole_conversation(tiny_rm_folder):
    rm = HFReward(tiny_rm_folder)
    assert text_of(rm.tokenizer, rm.encode(CHAT, "Also hot.")) == \
        "\n\nHuman: Is tea hot?\n\nAssistant: Yes.\n\nHuman: And green tea?\n\nAssistant: Also hot."
    plain = load_reward(f"hf:{tiny_rm_folder}", prompt_format="plain")
    text = text_of(plain.tokenizer, plain.encode(CHAT, "Also hot."))
    assert text.startswith("Is tea hot?\n\nYes.\n\nAnd green tea?") and text.endswith("Also hot.")
    assert plain.name == f"hf:{tiny_rm_folder} [plain]"


def test_hh_transcript_puts_a_system_message_first_as_plain_text():
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    assert hh_transcript(messages, cue=True) == "Be brief.\n\nHuman: Hi\n\nAssistant:"


def test_an_unknown_prompt_format_is_named(templateless_policy_folder):
    with pytest.raises(SecateursError, match="prompt_format must be one of hh, plain, got 'chatml'"):
        load_policy(templateless_policy_folder, prompt_format="chatml")


def test_the_command_line_runs_a_templateless_policy_and_rm_in_either_format(
        templateless_policy_folder, tiny_rm_folder, tmp_path, monkeypatch, capsys):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(json.dumps({"id": "c", "messages": list(CHAT.messages)}) + "\n")
    rows = {}
    for fmt in ("hh", "plain"):
        out = tmp_path / f"{fmt}.jsonl"
        code, err = run_main(monkeypatch, capsys, "run", "--method", "best-of-n", "--n", "2", "--max-new-tokens", "6",
                             "--prompts", prompts, "--policy", templateless_policy_folder, "--reward",
                             f"hf:{tiny_rm_folder}", "--prompt-format", fmt, "--out", out, "--quiet")
        assert code == 0, err
        [rows[fmt]] = [json.loads(line) for line in out.read_text().splitlines()]
    assert rows["plain"]["policy"].endswith(" [plain]") and rows["plain"]["reward_model"].endswith(" [plain]")
    assert rows["hh"]["reward"] != rows["plain"]["reward"]  # the RM read another text
    code, err = run_main(monkeypatch, capsys, "run", "--prompt-format", "xml")
    assert code == 2 and "xml" in err and "Traceback" not in err
