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
KINDS = tasks.TASKS + [TEXT, COPY]
ANSWER_WEIGHT = 5.0
EOS = 0


def load_tokenizer(path):
    from tokenizers import Tokenizer
    return Tokenizer.from_file(path)


class BatchMaker:
    def __init__(self, tokenizer_path, corpus_ids_path, stream, mix, buckets, tokens_per_batch):
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
        if kind == TEXT:
            start = rng.randrange(0, len(self.corpus) - t - 1)
            seq = np.asarray(self.corpus[start:start + t + 1], dtype=np.int64)
            ids[:] = seq[:t]
            labels[:] = seq[1:]
            weights[:] = 1.0
            return ids, labels, weights, t
        target = rng.randint(max(16, t // 2), t - 24)
        prompt, answer = self.sampler.sample(kind, tasks.train_rng(self.stream, index), target)
        seq = prompt + (answer or [])
        seq = seq[:t + 1]
        n = len(seq)
        ids[:n - 1 if n > t else n] = seq[:t]
        m = min(n - 1, t)
        labels[:m] = seq[1:m + 1]
        weights[:m] = 1.0
        if answer:
            a0 = len(prompt) - 1  # position whose next token is the first answer token
            weights[a0:m] = ANSWER_WEIGHT
        return ids, labels, weights, len(prompt)

    def batch(self, index):
        rng = random.Random(f"batch/{self.stream}/{index}")
        t = rng.choices([b for b, _ in self.buckets], [w for _, w in self.buckets])[0]
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
    def __init__(self, start, **kwargs):
        self.kwargs = kwargs
        self.start = start

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        wid, nw = (info.id, info.num_workers) if info else (0, 1)
        maker = BatchMaker(**self.kwargs)
        i = self.start + wid
        while True:
            yield maker.batch(i)
            i += nw


def loader(start, workers, **kwargs):
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    return torch.utils.data.DataLoader(BatchStream(start, **kwargs), batch_size=None,
                                       num_workers=workers, prefetch_factor=4 if workers else None,
                                       persistent_workers=workers > 0)
