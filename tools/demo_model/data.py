"""Training batches: the eval-format tasks of tasks.py mixed with English text.

A batch has one length T (a bucket); every row is one sample: a task prompt of up to T minus the
answer tokens followed by " ANSWER\\n", a filler document (the lm_ppl format), or a window of the
Debian-package corpus. Rows are padded with <|endoftext|> (not scored).
Per row: ids [T], labels [T] (-100: not scored), weights [T], task index, prompt length.
"""

import os
import random

import numpy as np
import torch

import tasks

TEXT = "text"
COPY = "copy"  # a corpus window repeated: the second copy is scored as an answer
# Random strings of the answers' alphabets (digits, hex, capitals, hyphenated word pairs) in
# filler text, then repeated: the second copy is scored as an answer.
COPY_STR = "copy_str"
KINDS = tasks.TASKS + [TEXT, COPY, COPY_STR]
ANSWER_WEIGHT = 5.0
EOS = 0


def load_tokenizer(path):
    from tokenizers import Tokenizer
    return Tokenizer.from_file(path)


class BatchMaker:
    def __init__(self, tokenizer_path, corpus_ids_path, stream, mix, buckets, tokens_per_batch,
                 extras=0.0, curriculum=None):
        """buckets: [(T, weight)], or with `curriculum` a list of (until, buckets): the buckets
        of the first phase whose `until` (a fraction of the training schedule) is above the
        schedule's progress when the batch is made (the last phase from then on). extras: the fraction of task rows that append the task's further
        questions (tasks.Build.extras) after the answer, as long as the row has room."""
        self.extras = extras
        self.curriculum = curriculum
        self.tok = load_tokenizer(tokenizer_path)
        self.sampler = tasks.Sampler(self.tok)
        self.corpus = np.load(corpus_ids_path, mmap_mode="r") if corpus_ids_path else None
        self.stream = stream
        self.mix = mix  # {kind: weight}
        self.buckets = buckets  # [(T, weight)]
        self.tokens_per_batch = tokens_per_batch

    def row(self, kind, index, t, rng):
        """One sample of kind `kind` in a row of length t."""
        ids = np.full(t, EOS, dtype=np.int64)
        labels = np.full(t, -100, dtype=np.int64)
        weights = np.zeros(t, dtype=np.float32)
        if kind == COPY:
            k = rng.randint(8, max(9, t // 3))
            start = rng.randrange(0, len(self.corpus) - k - 1)
            chunk = np.asarray(self.corpus[start:start + k], dtype=np.int64)
            pre = rng.randint(0, t - 2 * k)
            s0 = rng.randrange(0, len(self.corpus) - t - 1)
            seq = np.asarray(self.corpus[s0:s0 + t + 1], dtype=np.int64).copy()
            gap = rng.randint(0, t - 2 * k - pre)
            seq[pre:pre + k] = chunk
            seq[pre + k + gap:pre + 2 * k + gap] = chunk
            ids[:] = seq[:t]
            labels[:] = seq[1:]
            weights[:] = 1.0
            weights[pre + k + gap:pre + 2 * k + gap - 1] = ANSWER_WEIGHT
            return ids, labels, weights, t
        if kind == COPY_STR:
            return self.copy_str_row(t, rng)
        if kind == TEXT:
            start = rng.randrange(0, len(self.corpus) - t - 1)
            seq = np.asarray(self.corpus[start:start + t + 1], dtype=np.int64)
            ids[:] = seq[:t]
            labels[:] = seq[1:]
            weights[:] = 1.0
            return ids, labels, weights, t
        more = kind in ("niah_multikey", "kv_retrieval", "variable_tracking") and \
            rng.random() < self.extras
        room = 0
        if more:  # leave room for a few further questions
            room = {"niah_multikey": 3 * 30, "kv_retrieval": 4 * 40,
                    "variable_tracking": 40}[kind]
            room = min(room, t // 4)
        target = rng.randint(max(16, int(0.6 * (t - room))), t - 24 - room)
        prompt, answer, extra = self.sampler.sample(kind, tasks.train_rng(self.stream, index),
                                                    target, extras=rng)
        seq = list(prompt)
        spans = []  # (first, last): positions whose next token is an answer token
        if answer:
            spans.append((len(seq) - 1, len(seq) + len(answer) - 1))
            seq += answer
        if more:
            for q, a in extra:
                if len(seq) + len(q) + len(a) > t + 1:
                    break
                seq += q
                spans.append((len(seq) - 1, len(seq) + len(a) - 1))
                seq += a
        seq = seq[:t + 1]
        n = len(seq)
        ids[:n - 1 if n > t else n] = seq[:t]
        m = min(n - 1, t)
        labels[:m] = seq[1:m + 1]
        weights[:m] = 1.0
        for a0, a1 in spans:
            weights[a0:min(a1, m)] = ANSWER_WEIGHT
        return ids, labels, weights, len(prompt)

    def random_string(self, rng):
        k = rng.random()
        if k < 0.3:
            return tasks.digits(rng, rng.randint(3, 9))
        if k < 0.6:
            return tasks.hexs(rng, rng.randint(4, 10))
        if k < 0.85:
            return "".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ") for _ in range(rng.randint(3, 6)))
        return f"{rng.choice(tasks.ADJECTIVES)}-{rng.choice(tasks.NOUNS)}"

    def copy_str_row(self, t, rng):
        """Filler, a line of random strings, filler, the same line again (scored from its second
        token on), filler; in a row of t tokens."""
        enc = self.sampler.encode
        ids = np.full(t, EOS, dtype=np.int64)
        labels = np.full(t, -100, dtype=np.int64)
        weights = np.zeros(t, dtype=np.float32)
        sep = rng.choice([" ", ", ", "\n", " "])
        want = rng.randint(6, max(7, min(96, t // 4)))
        parts, line = [], []
        while len(line) < want:
            parts.append(self.random_string(rng))
            line = enc(sep.join(parts) + "\n")
        filler = tasks.Filler(rng)
        budget = t + 1 - 2 * len(line)
        fill = enc(filler.sentences(max(1, budget // 10)))
        if budget < 0:
            line = line[: (t + 1) // 2]
            budget = t + 1 - 2 * len(line)
        cut = sorted(rng.randint(0, min(budget, len(fill))) for _ in range(2))
        seq = fill[:cut[0]] + line + fill[cut[0]:cut[1]]
        a0 = len(seq)
        seq = seq + line + fill[cut[1]:]
        seq = seq[:t + 1]
        n = len(seq)
        ids[:n - 1 if n > t else n] = seq[:t]
        m = min(n - 1, t)
        labels[:m] = seq[1:m + 1]
        weights[:m] = 1.0
        weights[a0:min(a0 + len(line) - 1, m)] = ANSWER_WEIGHT
        return ids, labels, weights, t

    def buckets_at(self, progress):
        if not self.curriculum:
            return self.buckets
        for until, buckets in self.curriculum:
            if progress < until:
                return buckets
        return self.curriculum[-1][1]

    def batch(self, index, progress=0.0):
        rng = random.Random(f"batch/{self.stream}/{index}")
        buckets = self.buckets_at(progress)
        t = rng.choices([b for b, _ in buckets], [w for _, w in buckets])[0]
        b = max(1, self.tokens_per_batch // t)
        kinds = list(self.mix)
        chosen = rng.choices(kinds, [self.mix[k] for k in kinds], k=b)
        rows = [self.row(k, index * 4096 + j, t, rng) for j, k in enumerate(chosen)]
        return {
            "ids": torch.from_numpy(np.stack([r[0] for r in rows])),
            "labels": torch.from_numpy(np.stack([r[1] for r in rows])),
            "weights": torch.from_numpy(np.stack([r[2] for r in rows])),
            "kind": torch.tensor([KINDS.index(k) for k in chosen]),
            "prompt_len": torch.tensor([r[3] for r in rows]),
        }


class BatchStream(torch.utils.data.IterableDataset):
    """Batch indices start, start + 1, ... (round-robin over the workers); `clock` (a shared
    multiprocessing.Value, or None) holds the training schedule's progress, which the trainer
    updates every step and the length curriculum reads."""

    def __init__(self, start, clock=None, **kwargs):
        self.kwargs = kwargs
        self.start = start
        self.clock = clock

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        wid, nw = (info.id, info.num_workers) if info else (0, 1)
        maker = BatchMaker(**self.kwargs)
        j = wid
        while True:
            yield maker.batch(self.start + j, self.clock.value if self.clock else 0.0)
            j += nw


def loader(start, workers, clock=None, **kwargs):
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    return torch.utils.data.DataLoader(BatchStream(start, clock, **kwargs), batch_size=None,
                                       num_workers=workers, prefetch_factor=4 if workers else None,
                                       persistent_workers=workers > 0)
