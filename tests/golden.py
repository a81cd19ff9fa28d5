"""Record every method's outputs on the tiny test models: `python tests/golden.py` writes
tests/data/golden_0_1_0.json. Run once at version 0.1.0 (before the scheduler rebuild);
test_golden.py checks that the current code still returns the same tokens. A deliberate change of
answers re-records only the cases it changes: `python tests/golden.py 5 6` (indices into CASES).

Deliberate changes since 0.1.0 (issue 21, the authors' behaviour):
- cards cases 5, 6 and rejection-sampling case 8: after max_retries rejections one more candidate is
  scored untested and the best of max_retries + 1 is taken; case 5 also: a CARDS candidate that ended
  at EOS is tested against r_star, not tau(t)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).parent
PROMPTS = ["how do i make tea", "give me a good tip for sleep", "what is green", "thank you",
           "can you help me with my work"]
REWARD = "sentiment+civility"
CASES = [
    ("sampling", {"max_new_tokens": 12}),
    ("best-of-n", {"n": 5, "max_new_tokens": 12}),
    ("best-of-n", {"n": 6, "max_new_tokens": 10, "temperature": 0.8, "top_p": 0.9, "max_batch_rows": 4}),
    ("speculative-rejection", {"n": 8, "alpha": 0.5, "max_new_tokens": 48, "first_decision_tokens": 16}),
    ("speculative-rejection", {"n": 6, "alpha": 0.7, "max_new_tokens": 30, "decision_tokens": (4, 9, 20)}),
    ("cards", {"acceptance": "hard", "r_star": 1.75, "max_new_tokens": 24, "max_retries": 5}),
    ("cards", {"acceptance": "hard", "max_new_tokens": 16, "proposals": 2, "max_retries": 4, "r_star": "auto"}),
    ("cards", {"acceptance": "soft", "max_new_tokens": 20, "proposals": 3, "r_star": "auto"}),
    ("rejection-sampling", {"acceptance": "hard", "max_new_tokens": 12, "max_retries": 6}),
    ("args", {"top_k": 5, "max_new_tokens": 6}),
]


def record(policy, cases=None) -> list[dict]:
    from secateurs.prompts import make_prompts
    from secateurs.rewards import load_reward
    from secateurs.runner import run_prompts
    from secateurs.methods import get_method

    reward = load_reward(REWARD)
    prompts = make_prompts(PROMPTS)
    out = []
    for method, options in (CASES if cases is None else [CASES[i] for i in cases]):
        config = get_method(method).config_class(**options)
        for r in run_prompts(prompts, method, config, policy, reward, seed=7):
            out.append({"method": method, "options": {k: list(v) if isinstance(v, tuple) else v
                                                      for k, v in options.items()},
                        "id": r.id, "response": r.response, "reward": r.reward,
                        "finish_reason": r.finish_reason, "response_tokens": r.response_tokens,
                        "lm_tokens": r.cost.lm_tokens, "rm_calls": r.cost.rm_calls,
                        "tokens_generated": r.cost.tokens_generated})
    return out


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    from conftest import Policy, tiny_llama, word_tokenizer

    tok = word_tokenizer()
    policy = Policy(tiny_llama(len(tok)), tok, name="tiny-llama")
    (HERE / "data").mkdir(exist_ok=True)
    path = HERE / "data" / "golden_0_1_0.json"
    cases = [int(a) for a in sys.argv[1:]] or None
    rows = record(policy, cases)
    if cases is not None:  # keep the other cases' rows, in their place
        def name(row):
            return row["method"], json.dumps(row["options"], sort_keys=True)
        new = {}
        for row in rows:
            new.setdefault(name(row), []).append(row)
        old, rows, done = json.loads(path.read_text()), [], set()
        for row in old:
            if name(row) not in new:
                rows.append(row)
            elif name(row) not in done:
                rows += new[name(row)]
                done.add(name(row))
    path.write_text(json.dumps(rows, indent=1) + "\n")
    print(f"{len(rows)} results recorded")
