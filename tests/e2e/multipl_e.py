"""The MultiPL-E correctness workload: loading its samples and building its programs.

The workload (/work/shared/workloads/multipl-e, see its NOTICE.md; CODEQ_MULTIPL_E_DIR
overrides the directory) is a set of JSON-lines files of HumanEval and MBPP problems:

  humaneval-js, mbpp-js     JavaScript   gpt_solution's code, then tests
  humaneval-ts, mbpp-ts     TypeScript   gpt_solution's code, then tests
  humaneval-sh              bash         gpt_solution's code, then tests (see below)
  open_humaneval_python     Python       prompt + canonical_solution + test +
                                         check(entry_point): all 164 must pass

From open_humaneval_python this module also builds a second suite,
open_humaneval_python-gpt: its gpt_solution's code, then test and check(entry_point).
Those are not all correct, which gives Python failing programs too.

A gpt_solution is a model's answer in Markdown: one or more fenced code blocks with
prose around them (a second block is usually an example of use). The program's code is
the first block tagged with the suite's language, else the first untagged block, else
the first block at all; text without any fence is taken as code. Fences follow
CommonMark: ``` or ~~~ (three or more), indented or not, closed by a line of at least
as many of the same character, or by the end of the text.

MultiPL-E's bash tests begin with the `}` that closes the prompt's function: they were
written to follow a completion cut at its first "\\n}". A gpt_solution is a whole
script with the function already closed, so that brace is dropped from the tests when
the code defines the function; otherwise the program is the prompt, the code and the
tests as they are.

A program passes when, run as a whole by its interpreter, it exits with status 0.
Everything here is the standard library only: it runs under Debian's /usr/bin/python3.
"""

import json
import os
import re
from dataclasses import dataclass

WORKLOAD_DIR = os.environ.get("CODEQ_MULTIPL_E_DIR") or "/work/shared/workloads/multipl-e"

PYTHON = "python"
JAVASCRIPT = "javascript"
TYPESCRIPT = "typescript"
BASH = "bash"

# suite -> (file, language)
SUITES = {
    "humaneval-js": ("humaneval-js.jsonl", JAVASCRIPT),
    "mbpp-js": ("mbpp-js.jsonl", JAVASCRIPT),
    "humaneval-ts": ("humaneval-ts.jsonl", TYPESCRIPT),
    "mbpp-ts": ("mbpp-ts.jsonl", TYPESCRIPT),
    "humaneval-sh": ("humaneval-sh.jsonl", BASH),
    "open_humaneval_python": ("open_humaneval_python.jsonl", PYTHON),
    "open_humaneval_python-gpt": ("open_humaneval_python.jsonl", PYTHON),
}

# Suites every program of which must pass (the canonical solutions).
MUST_PASS = ("open_humaneval_python",)

# The tags a fenced block may carry for each language (compared in lower case).
LANGUAGE_TAGS = {
    PYTHON: {"python", "python3", "py", "py3"},
    JAVASCRIPT: {"javascript", "js", "node", "nodejs", "jsx", "mjs", "cjs"},
    TYPESCRIPT: {"typescript", "ts", "tsx"},
    BASH: {"bash", "sh", "shell", "shell-script"},
}

# The file name extension of a program in each language.
EXTENSIONS = {PYTHON: ".py", JAVASCRIPT: ".js", TYPESCRIPT: ".ts", BASH: ".sh"}


@dataclass(frozen=True)
class Program:
    suite: str  # a key of SUITES
    name: str  # unique within its suite, usable as a file name
    language: str  # PYTHON, JAVASCRIPT, TYPESCRIPT or BASH
    source: str  # the whole program
    must_pass: bool  # a reference solution: it passes natively and through codeq

    @property
    def id(self):
        return f"{self.suite}/{self.name}"

    @property
    def filename(self):
        return self.name + EXTENSIONS[self.language]


@dataclass(frozen=True)
class CodeBlock:
    tag: str  # the info string's first word, lower case ("" when untagged)
    code: str
    closed: bool  # False when the text ended before a closing fence


_OPEN_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>.*)$")


def fenced_blocks(markdown):
    """Every fenced code block of a Markdown text, in order."""
    lines = markdown.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    blocks = []
    i = 0
    while i < len(lines):
        m = _OPEN_FENCE.match(lines[i])
        # An info string of a backtick fence may not hold backticks (```x``` is inline).
        if m is None or (m.group("fence")[0] == "`" and "`" in m.group("info")):
            i += 1
            continue
        indent = len(m.group("indent").expandtabs(4))
        fence = m.group("fence")
        info = m.group("info").strip()
        tag = info.split()[0].lower().lstrip("{.").rstrip("}") if info else ""
        closing = re.compile(
            r"^[ \t]*" + re.escape(fence[0]) + "{" + str(len(fence)) + r",}[ \t]*$")
        body = []
        i += 1
        closed = False
        while i < len(lines):
            if closing.match(lines[i]):
                closed = True
                i += 1
                break
            line = lines[i]
            # Content lines lose up to the opening fence's indentation.
            strip = 0
            while strip < indent and strip < len(line) and line[strip] == " ":
                strip += 1
            body.append(line[strip:])
            i += 1
        blocks.append(CodeBlock(tag, "\n".join(body), closed))
    return blocks


def extract_code(markdown, language):
    """The code of an answer in Markdown (see the module's docstring)."""
    blocks = fenced_blocks(markdown)
    if not blocks:
        return markdown.strip("\n") + "\n"
    tags = LANGUAGE_TAGS[language]
    chosen = (
        next((b for b in blocks if b.tag in tags), None)
        or next((b for b in blocks if b.tag == ""), None)
        or blocks[0]
    )
    return chosen.code.rstrip() + "\n"


def load_rows(filename):
    """The rows of one workload file, as dicts."""
    rows = []
    with open(os.path.join(WORKLOAD_DIR, filename), encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except ValueError as e:
                    raise ValueError(f"{filename}:{number}: not JSON: {e}") from None
    return rows


def _safe_name(text):
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "program"


def _bash_function_name(prompt):
    """The function the prompt of a bash problem opens (its last `name() {`)."""
    names = re.findall(r"^(?:function\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*\(\)\s*\{?\s*$", prompt, re.M)
    return names[-1] if names else None


def _defines_bash_function(code, name):
    pattern = r"^\s*(?:function\s+" + re.escape(name) + r"\b|" + re.escape(name) + r"\s*\(\s*\))"
    return re.search(pattern, code, re.M) is not None


def build_bash(row):
    code = extract_code(row["gpt_solution"], BASH)
    tests = row["tests"]
    name = _bash_function_name(row["prompt"])
    opener = re.match(r"\s*\}[ \t]*(\n|$)", tests)
    if opener and name and _defines_bash_function(code, name):
        return code + "\n" + tests[opener.end():].lstrip("\n") + "\n"
    return row["prompt"] + code + "\n" + tests + "\n"


def build_node(row, language):
    return extract_code(row["gpt_solution"], language) + "\n" + row["tests"].rstrip() + "\n"


def build_python_canonical(row):
    return (row["prompt"] + row["canonical_solution"] + "\n" + row["test"] + "\n"
            + f"check({row['entry_point']})\n")


def build_python_gpt(row):
    return (extract_code(row["gpt_solution"], PYTHON) + "\n\n" + row["test"] + "\n"
            + f"check({row['entry_point']})\n")


def _row_name(row):
    if "name" in row:
        return _safe_name(row["name"])
    # open_humaneval_python: "HumanEval/12" and entry point "longest".
    return _safe_name(row["task_id"].replace("/", "_") + "_" + row["entry_point"])


def load_suite(suite):
    """The programs of one suite, in file order."""
    filename, language = SUITES[suite]
    programs = []
    seen = set()
    for row in load_rows(filename):
        if language == BASH:
            source = build_bash(row)
        elif language in (JAVASCRIPT, TYPESCRIPT):
            source = build_node(row, language)
        elif suite.endswith("-gpt"):
            source = build_python_gpt(row)
        else:
            source = build_python_canonical(row)
        name = _row_name(row)
        if name in seen:
            raise ValueError(f"{filename}: two problems named {name}")
        seen.add(name)
        programs.append(Program(suite, name, language, source, suite in MUST_PASS))
    return programs


def load_all():
    """{suite: [Program]} for every suite."""
    return {suite: load_suite(suite) for suite in SUITES}
