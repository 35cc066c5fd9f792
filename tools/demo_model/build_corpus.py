#!/usr/bin/env python3
"""Builds the English text corpus of the demo model from Debian packages.

Downloads a few Debian packages with English prose (`apt-get download`: dictionaries, a
reference book, the Debian documentation), unpacks them with `dpkg-deb -x` into the work folder
(default build/demo_model, ignored by git) and writes plain text, one document per paragraph
group, to WORK/corpus.txt. Documents are separated by a line holding only "\\f" (form feed).
Only the scripts are part of the project; the packages and the corpus stay in the work folder.

Usage: python3 tools/demo_model/build_corpus.py [--work build/demo_model]
"""

import argparse
import glob
import gzip
import html.parser
import os
import re
import subprocess

PACKAGES = [
    "dict-gcide",  # Collaborative International Dictionary of English (Webster 1913 + WordNet)
    "dict-devil",  # The Devil's Dictionary, Ambrose Bierce
    "dict-jargon",  # The Jargon File
    "dict-foldoc",  # Free On-line Dictionary of Computing
    "debian-reference-en",  # Debian Reference (plain text)
    "debian-handbook",  # The Debian Administrator's Handbook (HTML, en-US only)
    "doc-debian",  # Debian constitution, social contract, FAQ-like texts
]
SEPARATOR = "\f"


class _TextOfHtml(html.parser.HTMLParser):
    BLOCK = {"p", "div", "li", "h1", "h2", "h3", "h4", "pre", "tr", "dt", "dd", "br", "table"}
    SKIP = {"script", "style", "head", "title"}

    def __init__(self):
        super().__init__()
        self.parts = []
        self.skip = 0

    def handle_starttag(self, tag, attrs):
        if tag in self.SKIP:
            self.skip += 1
        if tag in self.BLOCK:
            self.parts.append("\n\n")

    def handle_endtag(self, tag):
        if tag in self.SKIP and self.skip:
            self.skip -= 1
        if tag in self.BLOCK:
            self.parts.append("\n\n")

    def handle_data(self, data):
        if not self.skip:
            self.parts.append(data)


def clean(text):
    """Collapses runs of spaces inside paragraphs and keeps paragraph breaks."""
    paragraphs = []
    for block in re.split(r"\n\s*\n", text):
        line = " ".join(block.split())
        if len(line) >= 40:  # drop navigation crumbs and headings without prose
            paragraphs.append(line)
    return "\n\n".join(paragraphs)


def documents_of_dict(path):
    """dictd databases (.dict.dz is gzip-compatible): entries are separated by headword lines."""
    raw = gzip.open(path, "rt", encoding="utf-8", errors="replace").read()
    # gcide marks up with <...>; remove tags and the `00-database-*` meta entries.
    raw = re.sub(r"<[^>]{0,40}>", "", raw)
    entries = re.split(r"\n(?=\S)", raw)
    doc = []
    size = 0
    for entry in entries:
        if entry.startswith("00-database") or entry.startswith("00database"):
            continue
        text = " ".join(entry.split())
        if len(text) < 30:
            continue
        doc.append(text)
        size += len(text)
        if size > 20000:  # group entries into documents of ~20 kB
            yield "\n".join(doc)
            doc, size = [], 0
    if doc:
        yield "\n".join(doc)


def documents(root):
    for path in sorted(glob.glob(os.path.join(root, "usr/share/dictd/*.dict.dz"))):
        yield from documents_of_dict(path)
    for path in sorted(glob.glob(os.path.join(root, "usr/share/debian-reference/*.en.txt.gz"))):
        text = gzip.open(path, "rt", encoding="utf-8", errors="replace").read()
        for chunk in re.split(r"\n(?=Chapter \d+\.)", text):
            yield clean(chunk)
    pattern = os.path.join(root, "usr/share/doc/debian-handbook/html/en-US/*.html")
    for path in sorted(glob.glob(pattern)):
        parser = _TextOfHtml()
        parser.feed(open(path, encoding="utf-8", errors="replace").read())
        yield clean("".join(parser.parts))
    for path in sorted(glob.glob(os.path.join(root, "usr/share/doc/debian/*.txt.gz"))):
        yield clean(gzip.open(path, "rt", encoding="utf-8", errors="replace").read())


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", default="build/demo_model")
    parser.add_argument("--skip-download", action="store_true")
    args = parser.parse_args()
    debs = os.path.join(args.work, "debs")
    root = os.path.join(args.work, "root")
    os.makedirs(debs, exist_ok=True)
    if not args.skip_download:
        subprocess.run(["apt-get", "download", *PACKAGES], cwd=debs, check=True)
    os.makedirs(root, exist_ok=True)
    for deb in sorted(glob.glob(os.path.join(debs, "*.deb"))):
        subprocess.run(["dpkg-deb", "-x", deb, root], check=True)
    out_path = os.path.join(args.work, "corpus.txt")
    count = chars = 0
    with open(out_path, "w", encoding="utf-8") as out:
        for doc in documents(root):
            doc = doc.replace(SEPARATOR, " ").strip()
            if len(doc) < 200:
                continue
            out.write(doc + "\n" + SEPARATOR + "\n")
            count += 1
            chars += len(doc)
    print(f"{out_path}: {count} documents, {chars / 1e6:.1f} M characters")


if __name__ == "__main__":
    main()
