"""A text's reward does not depend on the texts scored in the same RM call (issue 12, point 5):
padding a text to the longest of its batch changed the default reward by up to 2e-7, enough to
flip a close choice, and which texts share a call depends on the prompts in flight."""

import random

from secateurs.prompts import make_prompts
from secateurs.rewards import HFReward, load_reward
from secateurs.rewards.base import PAD_MULTIPLE, length_buckets

PROMPTS = make_prompts(["how do i make a cup of green tea?", "give me a tip for sleep"])
WORDS = "tea water green boil leaf cup hot steep minutes the a and then pour add wait sleep bed night".split()


def texts(count: int = 40, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(0, 45))) for _ in range(count)]


def assert_batch_invariant(reward):
    pairs = [(PROMPTS[i % 2], t) for i, t in enumerate(texts())]
    alone = [reward.score([p], [t])[0] for p, t in pairs]
    together = reward.score([p for p, _ in pairs], [t for _, t in pairs])
    shuffled = list(range(len(pairs)))
    random.Random(1).shuffle(shuffled)
    some = shuffled[:13]
    partly = reward.score([pairs[i][0] for i in some], [pairs[i][1] for i in some])
    assert together == alone  # exactly: not within a tolerance
    assert partly == [alone[i] for i in some]
    assert len(set(alone)) > len(alone) // 2  # the texts do score differently


def test_default_reward_of_a_text_is_the_same_alone_and_in_any_batch():
    assert_batch_invariant(load_reward())


def test_hf_reward_of_a_text_is_the_same_alone_and_in_any_batch(tiny_rm_folder):
    assert_batch_invariant(HFReward(tiny_rm_folder, batch_size=8))


def test_length_buckets_depend_on_each_length_only():
    lengths = [1, 16, 17, 0, 40, 33, 16, 300]
    batches = length_buckets(lengths, batch_size=2, max_width=256)
    width_of = {i: w for w, batch in batches for i in batch}
    assert width_of == {0: 16, 1: 16, 2: 32, 3: 16, 4: 48, 5: 48, 6: 16, 7: 256}
    assert all(len(batch) <= 2 for _, batch in batches) and sorted(width_of) == list(range(len(lengths)))
    assert PAD_MULTIPLE == 16
