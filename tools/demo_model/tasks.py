"""Training samples in the format of `fluxattn eval` (apps/fluxattn/eval/tasks.cc, words.cc).

The prompts follow the same rules as the C++ generator: the same fixed sentences, word lists,
filler grammar, needle sentences, key formats and insertion depths, and the answer follows the
prompt as " ANSWER\\n" (a space, the answer, a newline), which is what the eval scores as the first
output line. The random draws are different: the C++ suite uses std::mt19937_64 seeded by
seed_seq{seed, kind, stream}; these samples use Python's `random.Random` (Mersenne Twister
MT19937, 32-bit) seeded with the string "fluxattn-demo-train/<stream>/<index>", so no training
sample is one of the eval samples whatever eval seeds are used (the samples share only the
rules and the small word lists; the chance that a whole 4K prompt repeats is nil).
"""

import os
import random
import re

HERE = os.path.dirname(os.path.abspath(__file__))
EVAL_DIR = os.environ.get("FLUXATTN_EVAL_DIR", os.path.join(HERE, "..", "..", "apps", "fluxattn", "eval"))

TASKS = ["passkey", "niah_multikey", "kv_retrieval", "variable_tracking", "frequent_words",
         "lm_ppl"]


def _word_lists():
    text = open(os.path.join(EVAL_DIR, "words.cc"), encoding="utf-8").read()
    lists = {}
    for name, body in re.findall(r"k(\w+) = \{(.*?)\};", text, re.S):
        lists[name] = re.findall(r'"([a-z]+)"', body)
    return lists


_W = _word_lists()
ADJECTIVES, NOUNS, VERBS, PLACES = _W["Adjectives"], _W["Nouns"], _W["Verbs"], _W["Places"]
assert (len(ADJECTIVES), len(NOUNS), len(VERBS), len(PLACES)) == (48, 48, 40, 32)


class Filler:
    """The filler grammar of words.cc (FillerText::Sentence); sentence i depends on the rng."""

    def __init__(self, rng):
        self.rng = rng
        self.cache = []

    def sentence(self, i):
        r = self.rng
        while len(self.cache) <= i:
            k = r.randrange(4)
            if k == 0:
                s = (f"the {r.choice(ADJECTIVES)} {r.choice(NOUNS)} {r.choice(VERBS)} a "
                     f"{r.choice(ADJECTIVES)} {r.choice(NOUNS)} near the {r.choice(PLACES)}.")
            elif k == 1:
                s = (f"a {r.choice(NOUNS)} from the {r.choice(PLACES)} {r.choice(VERBS)} the "
                     f"{r.choice(NOUNS)}.")
            elif k == 2:
                s = (f"every {r.choice(ADJECTIVES)} {r.choice(NOUNS)} at the {r.choice(PLACES)} "
                     f"was {r.choice(ADJECTIVES)} and {r.choice(ADJECTIVES)}.")
            else:
                s = (f"the {r.choice(NOUNS)} {r.choice(VERBS)} the {r.choice(ADJECTIVES)} "
                     f"{r.choice(NOUNS)} and then {r.choice(VERBS)} the {r.choice(NOUNS)}.")
            self.cache.append(s[0].upper() + s[1:] + " ")
        return self.cache[i]

    def sentences(self, n):
        return "".join(self.sentence(i) for i in range(n))


def haystack(filler, n, inserts):
    at = sorted(((int(depth * n + 0.5), text) for depth, text in inserts), key=lambda a: a[0])
    out, nxt = [], 0
    for i in range(n + 1):
        while nxt < len(at) and at[nxt][0] <= i:
            out.append(at[nxt][1])
            nxt += 1
        if i < n:
            out.append(filler.sentence(i))
    return "".join(out)


def digits(rng, count):
    return str(rng.randrange(1, 10)) + "".join(str(rng.randrange(10)) for _ in range(count - 1))


def hexs(rng, count):
    return "".join(rng.choice("0123456789abcdef") for _ in range(count))


def upper_name(rng):
    return "".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ") for _ in range(5))


def depth_of(rng):
    return rng.randrange(1001) / 1000.0


class Build:
    """text(n): the prompt with n filler units; answer: the expected first output line.
    extras(n, rng): optional further questions about the same prompt, as (question, answer)
    pairs to append after the answer's line (training only: more scored answers per row; the
    eval asks the first question alone)."""

    def __init__(self, text, answer, min_units=0, extras=None):
        self.text, self.answer, self.min_units = text, answer, min_units
        self.extras = extras


def build_passkey(rng):
    key, depth, filler = digits(rng, 5), depth_of(rng), Filler(rng)
    return Build(lambda n: (
        "A pass key is hidden somewhere in the long text below. Find it and remember it; the "
        "text around it does not matter.\n\n"
        + haystack(filler, n, [(depth, f"The pass key is {key}. Remember it. ")])
        + "\n\nWhat is the pass key? The pass key is"), key)


def build_niah_multikey(rng):
    keys, values, inserts = [], [], []
    while len(keys) < 4:
        key = f"{rng.choice(ADJECTIVES)}-{rng.choice(NOUNS)}"
        value = digits(rng, 7)
        if key in keys or value in values:
            continue
        inserts.append((depth_of(rng),
                        f"One of the special magic numbers for {key} is: {value}. "))
        keys.append(key)
        values.append(value)
    asked = rng.randrange(4)
    filler, key = Filler(rng), keys[asked]

    def extras(n, r):
        order = [i for i in range(4) if i != asked]
        r.shuffle(order)
        return [(f"What is the special magic number for {keys[i]} mentioned in the text? The "
                 f"special magic number for {keys[i]} is", values[i]) for i in order]
    return Build(lambda n: (
        "Some special magic numbers are hidden inside the following text. Memorize them; you "
        "will be asked about one of them.\n\n" + haystack(filler, n, inserts)
        + f"\n\nWhat is the special magic number for {key} mentioned in the text? The special "
        f"magic number for {key} is"), values[asked], extras=extras)


def build_kv_retrieval(rng):
    depth = depth_of(rng)
    asked_key, asked_value = hexs(rng, 8), hexs(rng, 8)
    pair_seed = rng.getrandbits(64)

    def pairs_of(n):
        pairs = random.Random(pair_seed)
        at = min(int(depth * n), n - 1)
        out = []
        for i in range(n):
            k, v = hexs(pairs, 8), hexs(pairs, 8)
            while k in (asked_key, asked_value) or v in (asked_key, asked_value):
                k, v = hexs(pairs, 8), hexs(pairs, 8)
            if i == at:
                k, v = asked_key, asked_value
            out.append((k, v))
        return out

    def text(n):
        lines = [f"key {k}: value {v}\n" for k, v in pairs_of(n)]
        return ("Below is a list of keys, each with its value. Every key occurs once.\n\n"
                + "".join(lines) + f"\nWhat is the value of key {asked_key}? The value of key "
                f"{asked_key} is")

    def extras(n, r):
        pairs = [p for p in pairs_of(n) if p[0] != asked_key]
        chosen = r.sample(pairs, min(len(pairs), 7))
        return [(f"What is the value of key {k}? The value of key {k} is", v) for k, v in chosen]
    return Build(text, asked_value, min_units=1, extras=extras)


def build_variable_tracking(rng):
    used = set()

    def fresh():
        while True:
            s = upper_name(rng)
            if s not in used:
                used.add(s)
                return s
    value = digits(rng, 5)
    decoy = digits(rng, 5)
    while decoy == value:
        decoy = digits(rng, 5)
    inserts, chains = [], []
    for v in (value, decoy):
        names = [fresh() for _ in range(4)]
        for h in range(4):
            depth = (h + 0.2 + 0.6 * rng.randrange(1001) / 1000.0) / 4
            rhs = v if h == 0 else f"VAR {names[h - 1]}"
            inserts.append((depth, f"VAR {names[h]} = {rhs}. "))
        chains.append(names)
    chain = chains[0]
    filler = Filler(rng)

    def extras(n, r):
        return [(f"Question: which variables are assigned the value {decoy}, directly or through "
                 "other variables? Answer: the variables are", " ".join(chains[1]))]
    return Build(lambda n: (
        "Memorize the variable assignments hidden in the following text.\n\n"
        + haystack(filler, n, inserts)
        + f"\n\nQuestion: which variables are assigned the value {value}, directly or through "
        "other variables? Answer: the variables are"), " ".join(chain), extras=extras)


def build_frequent_words(rng):
    pool = NOUNS + ADJECTIVES
    rng.shuffle(pool)
    top, rest = pool[:3], pool[3:]
    order_seed = rng.getrandbits(64)

    def text(n):
        c = max(3, n // 10)
        items = []
        for k in range(3):
            items += [top[k]] * (c + 2 - k)
        slots = max(0, n - len(items))
        items += [rest[j % len(rest)] for j in range(slots)]
        random.Random(order_seed ^ n).shuffle(items)
        lst = "".join(f"{i + 1}. {w}\n" for i, w in enumerate(items))
        return ("Below is a numbered list of words. A few words occur many more times than the "
                "others.\n\n" + lst + "\nQuestion: what are the three most frequent words in the "
                "list above, from the most frequent to the least? Answer: the three most "
                "frequent words are")
    return Build(text, " ".join(top), min_units=12)


def build_lm_ppl(rng):
    filler = Filler(rng)
    return Build(filler.sentences, None, min_units=1)


BUILDERS = {
    "passkey": build_passkey,
    "niah_multikey": build_niah_multikey,
    "kv_retrieval": build_kv_retrieval,
    "variable_tracking": build_variable_tracking,
    "frequent_words": build_frequent_words,
    "lm_ppl": build_lm_ppl,
}


def train_rng(stream, index):
    """The generator of training sample `index` of `stream` (disjoint from the eval's)."""
    return random.Random(f"fluxattn-demo-train/{stream}/{index}")


class Sampler:
    """Writes samples of about a target length in tokens, as (prompt ids, answer ids)."""

    def __init__(self, tokenizer):
        self.tok = tokenizer
        self.per_unit = {}  # running estimate of tokens per unit, by task

    def encode(self, text):
        return self.tok.encode(text).ids

    def sample(self, task, rng, target, extras=None):
        """Prompt ids of at most `target` tokens (close to it) and the answer's ids; with
        `extras` (a random.Random), also the task's further questions as a list of
        (question ids, answer ids), [] for tasks without them."""
        b = BUILDERS[task](rng)
        base = len(self.encode(b.text(b.min_units)))
        per = self.per_unit.get(task, 12.0)
        n = max(b.min_units, int((target - base) / per))
        ids = self.encode(b.text(n))
        for _ in range(4):
            if n > b.min_units:
                self.per_unit[task] = 0.9 * per + 0.1 * max(1.0, (len(ids) - base) / (n - b.min_units))
                per = self.per_unit[task]
            if len(ids) <= target and len(ids) >= 0.97 * target:
                break
            n = max(b.min_units, n + int((target - len(ids)) / per) - (1 if len(ids) > target else 0))
            ids = self.encode(b.text(n))
        while len(ids) > target and n > b.min_units:
            n = max(b.min_units, n - max(1, int((len(ids) - target) / per)))
            ids = self.encode(b.text(n))
        answer = None if b.answer is None else self.encode(" " + b.answer + "\n")
        if extras is None:
            return ids, answer
        more = [] if b.extras is None else [
            (self.encode(q), self.encode(" " + a + "\n")) for q, a in b.extras(n, extras)]
        return ids, answer, more
