#!/usr/bin/env python3
"""Every relative link of README.md and docs/*.md names a file that exists
and, with `#anchor`, a heading of that file (GitHub's anchor rule: lower
case, punctuation dropped, spaces as `-`). Exits 1 on a broken link.

    scripts/docs-links.py
"""
import glob
import os
import re
import sys


def anchors(path):
    found = set()
    with open(path, encoding="utf-8") as f:
        in_code = False
        for line in f:
            if line.startswith("```"):
                in_code = not in_code
            heading = re.match(r"^(#+)\s+(.*)", line)
            if heading and not in_code:
                text = heading.group(2).strip().lower()
                found.add(re.sub(r"[^\w\- ]", "", text).replace(" ", "-"))
    return found


def main():
    broken = 0
    pages = ["README.md"] + sorted(glob.glob("docs/*.md"))
    for page in pages:
        text = open(page, encoding="utf-8").read()
        for match in re.finditer(r"\]\(([^)\s]+)\)", text):
            link = match.group(1)
            if re.match(r"^[a-z]+:", link):
                continue
            path, _, anchor = link.partition("#")
            target = os.path.normpath(os.path.join(os.path.dirname(page), path)) if path else page
            if not os.path.exists(target):
                print(f"{page}: {link}: no such file")
                broken += 1
            elif anchor and target.endswith(".md") and anchor not in anchors(target):
                print(f"{page}: {link}: no such heading in {target}")
                broken += 1
    print(f"docs links: {len(pages)} pages, {broken} broken")
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
