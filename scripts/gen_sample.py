#!/usr/bin/env python3
"""gen_sample.py: writes the project's own sample data (testdata/sample.jsonl) and the
deliberately broken rows (testdata/broken.jsonl, testdata/broken.expect.tsv).

The sample is synthetic. It is written here, by this script, in the shape and spirit of the
Nexus KTO set (professorsynapse/nexus-synthetic-data, behavior_merged_kto_v1.5_balanced.jsonl):
an Obsidian-vault assistant that calls tools such as vaultLibrarian_searchContent, each row a
`conversations` list, a bool `label` and a `behavior` (or, for the response-pattern rows,
only a `pattern`). It covers the twelve Nexus datasets (nine behaviors, of which ask_first
rows carry behavior=intellectual_humility + pattern=ask_first + category as in the real file,
and the three response patterns text_only, tool_only, tool_text), and every shape the
product must handle: system+user+assistant and user+assistant rows, text-only, tool-only and
text+tool answers, two tool calls in one message, tool results given as user text
("Result: {...}"), multi-turn rows with `tool` messages (tau-bench style, one reusing a call
id), rows with a `tools` list, rows keyed `messages`, rows with only a `category`, tool-call ids
of every shape seen in real data, non-ASCII text, a row whose user text holds the literal
string "[INST]", prompts that appear with both labels, and a few rows longer than 512 tokens.
Labels alternate true/false from line 1, as in the Nexus merge.

Deterministic: a fixed seed, no clock, no set or dict iteration whose order could vary, and
the same json.dumps settings as the Nexus files (ensure_ascii=False). Rerunning it rewrites
byte-identical files. Only the standard library is used.

Usage (from the repository root):  python3 scripts/gen_sample.py [--out testdata]
"""
import argparse
import json
import os
import random

SEED = 20250611
MAX_LINE_BYTES = 4096  # the --max-line-bytes the broken file is read with

ALNUM_LOWER = "abcdefghijklmnopqrstuvwxyz0123456789"
ALNUM_MIXED = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"


def alnum(rng, n, alphabet=ALNUM_LOWER):
    return "".join(rng.choice(alphabet) for _ in range(n))


# ---------------------------------------------------------------------------------------------
# The world the assistant lives in: workspaces and notes.

WORKSPACES = [
    ("Work Projects", "Active client and product work", "Projects/"),
    ("Personal Vault", "Main note workspace", "Notes/"),
    ("Research", "Papers, reading notes and experiment logs", "Research/"),
    ("Recipe Collection", "Recipes and meal planning workspace", "Recipes/"),
    ("Archive", "Archived files, legacy documents, and historical records", "Archive/"),
    ("Travel", "Trips, itineraries and packing lists", "Travel/"),
]

# name, path, query, phrase, body (the note's text; used in tool results)
TOPICS = [
    ("Q3 roadmap", "Projects/Q3 Roadmap.md", "roadmap", "the Q3 roadmap",
     "# Q3 Roadmap\n\n- [ ] Launch v2 API (owner: Dana, due 2024-08-30)\n- [x] Migrate billing to Stripe\n- [ ] Hire two backend engineers"),
    ("standup notes", "Meetings/2024-05-14 Standup.md", "standup", "Tuesday's standup",
     "## Standup 2024-05-14\n- Priya: finished the export bug\n- Tom: blocked on staging credentials\n- Action: Tom to ping ops"),
    ("attention papers", "Research/Attention papers.md", "attention", "the attention papers",
     "# Attention papers\n1. Vaswani et al. 2017, Attention Is All You Need\n2. Dao et al. 2022, FlashAttention\n3. Ainslie et al. 2023, GQA"),
    ("crème brûlée", "Recipes/Crème brûlée.md", "caramel", "the crème brûlée recipe",
     "# Crème brûlée\n- 500 ml crème fraîche\n- 6 egg yolks, 100 g sugar\n- Bake 40 min at 150 °C, caramelise with a torch"),
    ("Kyoto trip", "Travel/京都の計画.md", "京都", "京都旅行の計画",
     "# 京都の計画\n- 1日目: 伏見稲荷大社 (Fushimi Inari)\n- 2日目: 嵐山と竹林\n- [ ] 旅館を予約する\n- 予算: ¥80,000"),
    ("Müller account", "Projects/Clients/Müller GmbH.md", "Müller", "the Müller GmbH account",
     "# Müller GmbH\nContact: Jürgen Müller (jürgen@mueller.example)\nContract renewal: 2024-09-01\n- [ ] Resolve the disputed invoice #4471"),
    ("launch ideas", "Notes/Ideas/🚀 Launch ideas.md", "launch", "my launch ideas",
     "# 🚀 Launch ideas\n- Waitlist with referral codes\n- Product Hunt on a Tuesday\n- Founder AMA 🎤"),
    ("API design", "Projects/Docs/API design.md", "pagination", "the API design doc",
     "# API design\n## Pagination\nCursor-based, `limit` max 100.\n## Errors\nRFC 7807 problem+json."),
    ("2022 budget", "Archive/Budget 2022.md", "budget", "the 2022 budget",
     "# Budget 2022\nTotal: $184,000\nMarketing: $42,000\nTooling: $18,500"),
    ("reading list", "Notes/Reading/Cien años de soledad.md", "Macondo", "my notes on Cien años de soledad",
     "# Cien años de soledad\nGabriel García Márquez, 1967.\nThemes: solitude, memory, the cyclical history of Macondo."),
    ("sleep log", "Notes/Health/Sleep log.md", "sleep", "my sleep log",
     "# Sleep log\n| date | hours |\n|---|---|\n| 06-01 | 7.5 |\n| 06-02 | 6.0 |\n| 06-03 | 8.0 |"),
    ("database config", "config/database.yaml", "password", "the database config",
     "database:\n  host: db.internal\n  port: 5432\n  user: app\n  password: ${DB_PASSWORD}"),
    ("onboarding checklist", "Projects/HR/Onboarding checklist.md", "onboarding", "the onboarding checklist",
     "# Onboarding checklist\n- [ ] Laptop ordered\n- [ ] Accounts created\n- [ ] Buddy assigned"),
    ("garden plan", "Notes/Home/Garden plan 🌱.md", "tomatoes", "my garden plan",
     "# Garden plan 🌱\n- [ ] Plant tomatoes in the south bed after May 15\n- Basil between the tomatoes\n- Compost in October"),
    ("thesis outline", "Research/Thèse — plan.md", "chapitre", "the outline of my thèse",
     "# Thèse — plan\n1. Introduction et état de l'art\n2. Méthodologie\n3. Résultats préliminaires"),
    ("product review", "Projects/会议/产品评审 2024-06.md", "评审", "产品评审会议记录",
     "# 产品评审 2024-06\n- 结论: 推迟发布两周\n- 负责人: 李雷\n- 下一步: 修复登录问题"),
]


class World:
    """Per-row identifiers: session and workspace ids in the Nexus formats."""

    def __init__(self, rng):
        self.rng = rng

    def session(self):
        ts = self.rng.randrange(1732000000000, 1765000000000)
        return "session_%d_%s" % (ts, alnum(self.rng, 9)), "ws_%d_%s" % (ts, alnum(self.rng, 9))

    def call_id(self):
        """One tool-call id in one of the shapes found in real logs (about half are the 9
        alphanumerics the template accepts; the rest must be repaired)."""
        rng = self.rng
        r = rng.random()
        if r < 0.50:
            return alnum(rng, 9)  # 5cr9tqt2z
        if r < 0.55:
            return alnum(rng, 9, ALNUM_MIXED)  # Ab3dE5gH9
        if r < 0.65:
            return "call_%03d" % rng.randrange(1, 400)  # call_060
        if r < 0.72:
            return "toolu_" + alnum(rng, 6)  # toolu_abc123
        if r < 0.76:
            return "toolu_01" + alnum(rng, 22, ALNUM_MIXED)  # Anthropic's long form
        if r < 0.82:
            return "call_err%d_%03d" % (rng.randrange(10, 99), rng.randrange(1, 4))  # call_err56_001
        if r < 0.87:
            return "neg%03d" % rng.randrange(1, 200)  # neg036
        if r < 0.91:
            return "tc_err%03d" % rng.randrange(1, 100)  # tc_err018
        if r < 0.96:
            return "call_" + alnum(rng, 8)  # call_t0u1v2w3
        return "call_" + alnum(rng, 24, ALNUM_MIXED)  # OpenAI's form


def dumps(obj, compact=False):
    if compact:
        return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
    return json.dumps(obj, ensure_ascii=False)


class Row:
    """Builds one conversation."""

    def __init__(self, w, system=True, style=None, ws=None, memory=None, description=None, extra_ws=None):
        self.w = w
        rng = w.rng
        self.session_id, self.workspace_id = w.session()
        self.ws = ws or rng.choice(WORKSPACES)
        self.description = description or "Working in %s" % self.ws[0]
        self.memory = memory or "New session; no earlier actions."
        self.compact = rng.random() < 0.25
        self.messages = []
        if system:
            style = style or rng.choice(["important", "important", "xml"])
            self.messages.append({"role": "system", "content": self._system(style, extra_ws or [])})

    def _system(self, style, extra_ws):
        if style == "xml":
            return ("<session_context>\n<sessionId>%s</sessionId>\n<workspaceId>%s</workspaceId>\n"
                    "<sessionDescription>%s</sessionDescription>\n<sessionMemory>%s</sessionMemory>\n"
                    "</session_context>") % (self.session_id, self.workspace_id, self.description, self.memory)
        lines = [
            "<session_context>",
            "IMPORTANT: When using tools, include these values in your tool call parameters:",
            "",
            '- sessionId: "%s"' % self.session_id,
            '- workspaceId: "%s" (current workspace)' % self.workspace_id,
            "",
            'Include these in the "context" parameter of your tool calls.',
            "</session_context>",
            "<available_workspaces>",
            "The following workspaces are available in this vault:",
            "",
        ]
        for name, desc, root, wid in [self.ws + (self.workspace_id,)] + extra_ws:
            lines += ['- %s (id: "%s")' % (name, wid), "  Description: %s" % desc, "  Root folder: %s" % root, ""]
        lines += ["Use memoryManager with loadWorkspace mode to get full workspace context.", "</available_workspaces>"]
        return "\n".join(lines)

    def context(self, tool_context, primary, subgoal, memory=None, workspace_id=None):
        return {
            "sessionId": self.session_id,
            "workspaceId": workspace_id or self.workspace_id,
            "sessionDescription": self.description,
            "sessionMemory": memory or self.memory,
            "toolContext": tool_context,
            "primaryGoal": primary,
            "subgoal": subgoal,
        }

    def call(self, name, args, tool_context, primary, subgoal, call_id=None, **ctx_kw):
        full = {"context": self.context(tool_context, primary, subgoal, **ctx_kw)}
        full.update(args)
        return {"id": call_id or self.w.call_id(), "type": "function",
                "function": {"name": name, "arguments": dumps(full, self.compact)}}

    def user(self, text):
        self.messages.append({"role": "user", "content": text})
        return self

    def result(self, obj):
        """A tool result handed back as user text, as the Nexus set does."""
        return self.user("Result: " + dumps(obj))

    def assistant(self, text=None, calls=None):
        m = {"role": "assistant", "content": text}
        if calls:
            m["tool_calls"] = calls
        self.messages.append(m)
        return self

    def tool(self, call, content):
        self.messages.append({"role": "tool", "tool_call_id": call["id"], "name": call["function"]["name"],
                              "content": content if isinstance(content, str) else dumps(content)})
        return self

    def prefix(self):
        """A copy of the conversation so far, to answer the same prompt twice."""
        c = Row.__new__(Row)
        c.__dict__.update(self.__dict__)
        c.messages = [dict(m) for m in self.messages]
        return c


def row(r, label, behavior=None, pattern=None, category=None, key="conversations", tools=None):
    out = {key: r.messages}
    if tools is not None:
        out["tools"] = tools
    out["label"] = label
    if behavior:
        out["behavior"] = behavior
    if pattern:
        out["pattern"] = pattern
    if category:
        out["category"] = category
    return out


# ---------------------------------------------------------------------------------------------
# Scenarios. Each returns (desirable rows, undesirable rows). Most answer one prompt twice
# (good and bad), as the Nexus pairs do, so the same prompt appears with both labels.

def pick(rng, seq):
    return seq[rng.randrange(len(seq))]


def topic(rng):
    return pick(rng, TOPICS)


def shared_or_new(w, make_prompt):
    """The undesirable answer usually shares the prompt; sometimes it answers another one."""
    p = make_prompt()
    if w.rng.random() < 0.75:
        return p, p.prefix()
    return p, make_prompt()


def s_error_recovery(w):
    rng = w.rng
    name, path, query, phrase, body = topic(rng)
    folder = path.rsplit("/", 1)[0] + "/"
    v = rng.randrange(3)
    if v == 0:
        def mk():
            r = Row(w, memory="Tried to read %s; the read failed." % path, description="Finding %s" % phrase)
            return r.result({"success": False, "error": "File not found: %s" % path, "path": path})
        g, b = shared_or_new(w, mk)
        g.assistant("That file isn't at %s any more; it may have been renamed or moved. Let me search for it:\n\n" % path, [
            g.call("vaultLibrarian_searchContent", {"query": query, "paths": [folder], "limit": 10},
                   "Read failed with file-not-found. Searching the folder for the note instead of retrying the same path.",
                   "Open %s" % phrase, "Locate the moved file")])
        b.assistant(None, [b.call("contentManager_readContent", {"filePath": path},
                                  "Reading the file again.", "Open %s" % phrase, "Read file")])
        return [row(g, True, "error_recovery", "text_explain_recovery")], [row(b, False, "error_recovery")]
    if v == 1:
        new = folder + "Summary.md"
        def mk():
            r = Row(w, memory="contentManager_createContent on %s failed: Parent folder '%s' does not exist." % (new, folder),
                    description="Writing a summary of %s" % phrase)
            return r.user("Try again to save the summary of %s." % phrase)
        g, b = shared_or_new(w, mk)
        g.assistant(None, [
            g.call("vaultManager_createFolder", {"path": folder},
                   "The last create failed because the folder is missing; creating it first.", "Save the summary", "Create missing folder"),
            g.call("contentManager_createContent", {"filePath": new, "content": "# Summary\n\n" + body.split("\n", 1)[-1]},
                   "Now that the folder exists, writing the summary.", "Save the summary", "Write file")])
        b.assistant(None, [b.call("contentManager_createContent", {"filePath": new, "content": "# Summary\n"},
                                  "Retrying the create.", "Save the summary", "Write file")])
        return ([row(g, True, "error_recovery")],
                [row(b, False, "error_recovery", "text_explain_error")])
    def mk():
        r = Row(w, description="Cleaning folders")
        return r.result({"success": False, "error": "Permission denied: Cannot delete folder '%s'" % folder, "path": folder})
    g, b = shared_or_new(w, mk)
    g.assistant("I couldn't delete **%s**: the vault reports *permission denied*, so the folder is protected "
                "(often by sync or another plugin). Options:\n\n1. Archive it instead: I can move it to `Archive/`.\n"
                "2. Remove the protection in your sync settings, then I'll retry.\n3. Leave it as is.\n\nWhich would you prefer?" % folder)
    b.assistant(None, [b.call("vaultManager_deleteFolder", {"path": folder, "recursive": True},
                              "Forcing the delete with the recursive flag, ignoring the permission error.",
                              "Clean up vault folders", "Delete protected folder")])
    return [row(g, True, "error_recovery", "text_offer_alternatives")], [row(b, False, "error_recovery")]


def s_workspace_awareness(w):
    rng = w.rng
    name, path, query, phrase, body = topic(rng)
    ws = pick(rng, WORKSPACES)
    other = pick(rng, [x for x in WORKSPACES if x != ws])
    other_id = "ws_%d_%s" % (rng.randrange(1732000000000, 1765000000000), alnum(rng, 9))
    v = rng.randrange(2)
    if v == 0:
        fname = name[0].upper() + name[1:] + " - follow-up.md"
        def mk():
            r = Row(w, style="important", ws=ws, extra_ws=[other + (other_id,)])
            return r.user("Add a follow-up note about %s to my %s workspace" % (name, ws[0]))
        g, b = shared_or_new(w, mk)
        g.assistant(None, [g.call("contentManager_createContent",
                                  {"filePath": ws[2] + fname, "content": "# Follow-up: %s\n\n- " % name},
                                  "Creating the note under the %s root folder (%s) as the workspace expects." % (ws[0], ws[2]),
                                  "Add follow-up note", "Create note in workspace root")])
        b.assistant(None, [b.call("contentManager_createContent", {"filePath": fname, "content": "follow-up"},
                                  "Creating note.", "Add note", "Create", workspace_id=other_id)])
        return [row(g, True, "workspace_awareness")], [row(b, False, "workspace_awareness")]
    def mk():
        r = Row(w, style="important", ws=ws, extra_ws=[other + (other_id,)])
        return r.user("What's in my %s workspace?" % ws[0])
    g, b = shared_or_new(w, mk)
    g.assistant(None, [g.call("memoryManager_loadWorkspace", {"id": g.workspace_id},
                              "Loading the workspace to see its key files, folders and recent activity.",
                              "Describe the %s workspace" % ws[0], "Load workspace")])
    b.assistant(None, [b.call("vaultManager_listDirectory", {"path": "/", "depth": 5},
                              "Listing everything in the vault.", "Describe workspace", "List files")])
    return ([row(g, True, "workspace_awareness", "leverage_session_memory")],
            [row(b, False, "workspace_awareness", "text_maintain_context")])


def s_intellectual_humility(w):
    rng = w.rng
    name, path, query, phrase, body = topic(rng)
    v = rng.randrange(2)
    if v == 0:
        def mk():
            return Row(w, description="Answering a question about past decisions").user(
                "What did I decide about %s last week?" % phrase)
        g, b = shared_or_new(w, mk)
        g.assistant("I don't remember last week's conversations on my own, so I'll check your saved sessions and notes rather than guess.", [
            g.call("vaultLibrarian_searchMemory", {"query": "%s decision" % name, "workspaceId": g.workspace_id, "limit": 5},
                   "Searching memory traces for the decision instead of inventing one.",
                   "Recall decision about %s" % name, "Search memory")])
        b.assistant("Last week you decided to postpone %s by a month and hand it over to the design team. "
                    "You also agreed to revisit it after the quarterly review." % name)
        return ([row(g, True, "intellectual_humility", "text_admit_ignorance")],
                [row(b, False, "intellectual_humility")])
    def mk():
        return Row(w, system=rng.random() < 0.6).user("Is everything in %s still accurate?" % phrase)
    g, b = shared_or_new(w, mk)
    g.assistant("I can read the note, but I can't verify facts outside your vault, so I may not be able to tell "
                "whether everything in it is still current. Here is what I can do:\n\n1. Read %s and flag statements "
                "that look time-sensitive (dates, prices, names).\n2. Compare it with newer notes that mention \"%s\".\n\n"
                "Shall I start with the first?" % (path, query))
    b.assistant("Yes, %s is fully accurate and up to date. No changes are needed." % phrase)
    return ([row(g, True, "intellectual_humility", "text_clarify_ambiguous")],
            [row(b, False, "intellectual_humility", "text_clarify_ambiguous")])


def s_strategic_tool_selection(w):
    rng = w.rng
    name, path, query, phrase, body = topic(rng)
    folder = path.rsplit("/", 1)[0] + "/"
    v = rng.randrange(4)
    if v == 0:
        def mk():
            return Row(w).user("Find every note that mentions \"%s\"" % query)
        g, b = shared_or_new(w, mk)
        g.assistant(None, [g.call("vaultLibrarian_searchContent", {"query": query, "limit": 25, "includeContent": False},
                                  "A content search finds every mention in one call.", "Find mentions of %s" % query, "Search")])
        b.assistant(None, [b.call("vaultManager_listDirectory", {"path": "/", "depth": 10, "includeFiles": True},
                                  "Listing every file so I can open them one by one.", "Find mentions", "List all files")])
        return [row(g, True, "strategic_tool_selection", "efficient_search")], [row(b, False, "strategic_tool_selection")]
    if v == 1:
        new = folder.rstrip("/") + " (old)/"
        def mk():
            return Row(w).user("Rename the folder %s to %s" % (folder, new))
        g, b = shared_or_new(w, mk)
        g.assistant(None, [g.call("vaultManager_moveFolder", {"path": folder, "newPath": new},
                                  "moveFolder renames in place and keeps links intact.", "Rename folder", "Move folder")])
        b.assistant(None, [
            b.call("vaultManager_createFolder", {"path": new}, "Creating the new folder.", "Rename folder", "Create target"),
            b.call("vaultManager_deleteFolder", {"path": folder, "recursive": True}, "Deleting the old folder.", "Rename folder", "Remove source")])
        return [row(g, True, "strategic_tool_selection")], [row(b, False, "strategic_tool_selection")]
    if v == 2:
        a, c = pick(rng, [("TODO", "To do"), ("colour", "color"), ("Q3", "Q4"), ("draft", "final")])
        def mk():
            return Row(w).user("Replace '%s' with '%s' everywhere in %s" % (a, c, path))
        g, b = shared_or_new(w, mk)
        g.assistant(None, [g.call("contentManager_findReplaceContent",
                                  {"filePath": path, "findText": a, "replaceText": c, "replaceAll": True, "caseSensitive": True},
                                  "findReplaceContent does every replacement in one edit.", "Replace text", "Find and replace")])
        b.assistant(None, [
            b.call("contentManager_readContent", {"filePath": path}, "Reading the whole file first.", "Replace text", "Read"),
            b.call("contentManager_createContent", {"filePath": path, "content": body.replace(a, c)},
                   "Overwriting the file with my edited copy.", "Replace text", "Rewrite file")])
        return [row(g, True, "strategic_tool_selection")], [row(b, False, "strategic_tool_selection", "wasteful_full_read")]
    other = topic(rng)
    def mk():
        return Row(w).user("Pull up my notes on %s and on %s" % (name, other[0]))
    g, b = shared_or_new(w, mk)
    g.assistant("Searching for both at once:\n\n", [
        g.call("vaultLibrarian_searchContent", {"query": query, "limit": 5}, "First topic.", "Find two topics", "Search %s" % name),
        g.call("vaultLibrarian_searchContent", {"query": other[2], "limit": 5}, "Second topic.", "Find two topics", "Search %s" % other[0])])
    b.assistant(None, [b.call("vaultLibrarian_searchContent", {"query": "%s %s" % (query, other[2]), "limit": 500, "includeContent": True},
                              "One broad search with every term.", "Find notes", "Search")])
    return [row(g, True, "strategic_tool_selection")], [row(b, False, "strategic_tool_selection", "excessive_limit")]


EPU_CATEGORIES = ["architecture_design", "creative_writing", "research_synthesis", "strategic_planning",
                  "technical_deepdive", "api_design"]


def long_prompt(phrase, path):
    sections = [
        "ROLE: You are a senior analyst helping a small team plan its next quarter.",
        "CONTEXT: The team keeps its planning notes in an Obsidian vault. The attached file %s holds the "
        "current state of %s. Treat it as the single source of truth; where it is silent, say so instead of "
        "guessing, and list the open questions at the end." % (path, phrase),
        "TASK: Write a structured plan with these parts:\n1. A one-paragraph summary a busy reader can skim.\n"
        "2. Goals, each with a measurable outcome and an owner.\n3. Milestones by week, with dependencies named.\n"
        "4. Risks, each with likelihood, impact and a mitigation.\n5. Open questions for the team.",
        "CONSTRAINTS: Keep it under 900 words. Use Markdown headings and tables where they help. Do not invent "
        "budget figures; refer to the note's numbers only. Prefer plain words over jargon. Mark every "
        "assumption with (assumption).",
        "FORMAT: Start with a level-2 heading \"Plan\". Use a table for milestones (week | deliverable | owner | "
        "depends on). End with a checklist of next steps the user can paste into their daily note.",
        "TONE: Direct and practical; the readers are engineers and one designer.",
        "QUALITY BAR: Every goal must be traceable to a line of the note. If two goals conflict, say which one "
        "you would drop and why. Check the dates: milestones must not fall on weekends or after the quarter ends.",
    ]
    return "\n\n".join(sections)


def s_execute_prompt_usage(w):
    rng = w.rng
    name, path, query, phrase, body = topic(rng)
    cat = pick(rng, EPU_CATEGORIES)
    v = rng.randrange(3)
    if v == 0:
        def mk():
            return Row(w, description="Planning with the team").user("Draft a plan for next quarter based on %s" % phrase)
        g, b = shared_or_new(w, mk)
        g.assistant(None, [g.call("agentManager_executePrompt",
                                  {"prompt": long_prompt(phrase, path), "filepaths": [path], "returnContent": True,
                                   "maxTokens": 2000, "temperature": 0.4},
                                  "A plan needs reasoning over the whole note: delegating with a structured prompt.",
                                  "Draft the quarterly plan", "Delegate drafting")])
        b.assistant(None, [b.call("agentManager_executePrompt", {"prompt": "write a plan"},
                                  "Asking the agent.", "Plan", "Prompt")])
        return ([row(g, True, "execute_prompt_usage", "good_prompt_structure", category=cat)],
                [row(b, False, "execute_prompt_usage", "poor_prompt_structure", category=cat)])
    if v == 1:
        def mk():
            return Row(w).user("Write a short story inspired by %s, and save it next to the note" % phrase)
        g, b = shared_or_new(w, mk)
        out = path.rsplit(".", 1)[0] + " - story.md"
        g.assistant("I'll have the writing agent draft it and save it to `%s`:\n\n" % out, [
            g.call("agentManager_executePrompt",
                   {"prompt": "Write a 500-word short story inspired by the attached note. Keep its names and places; "
                              "third person, past tense, a quiet ending.", "filepaths": [path],
                    "action": {"type": "create", "targetPath": out}},
                   "Creative writing is delegated; the action saves the result.", "Write a story", "Delegate and save")])
        b.assistant("Here is a story:\n\nOnce upon a time there was a note about %s. The end." % name)
        return ([row(g, True, "execute_prompt_usage", "explain_and_save", category="creative_writing")],
                [row(b, False, "execute_prompt_usage", "should_delegate_but_didnt", category="creative_writing")])
    def mk():
        return Row(w).user("Compare the approaches in %s and give me your recommendation" % phrase)
    g, b = shared_or_new(w, mk)
    g.assistant(None, [g.call("agentManager_executePrompt",
                              {"prompt": "Compare the approaches described in the attached note. For each: strengths, "
                                         "weaknesses, cost. Finish with one recommendation and the reason for it.",
                               "filepaths": [path], "returnContent": True},
                              "An analysis across the note's content: delegating.", "Compare approaches", "Delegate")])
    b.assistant("They're all fine. Pick whichever you like best.")
    return ([row(g, True, "execute_prompt_usage", "appropriate_delegation")],
            [row(b, False, "execute_prompt_usage", "should_delegate_but_didnt")])


def s_verification_before_action(w):
    rng = w.rng
    name, path, query, phrase, body = topic(rng)
    folder = path.rsplit("/", 1)[0] + "/"
    v = rng.randrange(3)
    if v == 0:
        def mk():
            return Row(w, description="Cleaning up drafts").user("Delete all the old drafts in %s" % folder)
        g, b = shared_or_new(w, mk)
        g.assistant(None, [g.call("vaultManager_listDirectory", {"path": folder, "filter": "draft", "includeFiles": True},
                                  "Listing the drafts first so the user can confirm what will be deleted.",
                                  "Delete old drafts", "Verify scope")])
        b.assistant(None, [b.call("vaultManager_deleteFolder", {"path": folder, "recursive": True},
                                  "Deleting the folder with the drafts.", "Delete drafts", "Delete")])
        return ([row(g, True, "verification_before_action", "text_confirm_scope")],
                [row(b, False, "verification_before_action", "text_confirm_destructive")])
    if v == 1:
        def mk():
            return Row(w).user("Move everything from %s into Archive/" % folder)
        g, b = shared_or_new(w, mk)
        g.assistant("Before I move anything, please confirm the scope:\n\n- Source: `%s` (all notes and subfolders)\n"
                    "- Destination: `Archive/%s`\n- Links: notes elsewhere that link into `%s` will be updated.\n\n"
                    "Reply **yes** to move everything, or tell me which notes to leave in place." % (folder, folder, folder))
        b.assistant(None, [b.call("vaultManager_moveFolder", {"path": folder, "newPath": "Archive/" + folder, "overwrite": True},
                                  "Moving.", "Archive folder", "Move")])
        return ([row(g, True, "verification_before_action", "text_confirm_scope")],
                [row(b, False, "verification_before_action", "text_warn_consequences")])
    def mk():
        return Row(w).user("Rename all my files in %s to kebab-case" % folder)
    g, b = shared_or_new(w, mk)
    g.assistant("Renaming changes every link to these files, so here is what would happen first:\n\n"
                "| Current | New |\n|---|---|\n| `%s` | `%s` |\n\n**Risks**\n1. Two names may collide after "
                "lower-casing.\n2. Links from other notes must be rewritten.\n\nShall I show the full list, or go "
                "ahead and update the links too?" % (path.rsplit("/", 1)[1], path.rsplit("/", 1)[1].lower().replace(" ", "-")))
    b.assistant("Done! All files are now in kebab-case.")
    return ([row(g, True, "verification_before_action", "text_warn_consequences")],
            [row(b, False, "verification_before_action")])


def s_context_continuity(w):
    rng = w.rng
    name, path, query, phrase, body = topic(rng)
    v = rng.randrange(2)
    mem = "Earlier: created %s, added an overview and a list of open items." % path
    if v == 0:
        def mk():
            return Row(w, style="xml", memory=mem, description="Editing %s" % name).user("Add a section on next steps to it")
        g, b = shared_or_new(w, mk)
        g.assistant(None, [g.call("contentManager_appendContent", {"filePath": path, "content": "\n## Next steps\n- "},
                                  "\"it\" is the note created earlier in this session (%s)." % path,
                                  "Extend the note", "Append next steps")])
        b.assistant("Which note would you like me to add the section to?")
        return ([row(g, True, "context_continuity", "text_reference_prior")],
                [row(b, False, "context_continuity", "text_maintain_context")])
    def mk():
        return Row(w, style="xml", memory=mem, description="Editing %s" % name).user("What was the last thing we did?")
    g, b = shared_or_new(w, mk)
    g.assistant("Earlier in this session we created **%s** and added an overview and a list of open items. "
                "Want to continue with the open items?" % path)
    b.assistant(None, [b.call("vaultLibrarian_searchContent", {"query": "last thing"}, "Searching.", "Recall", "Search")])
    return ([row(g, True, "context_continuity", "text_summarize_completed")],
            [row(b, False, "context_continuity", "text_reference_prior")])


def s_context_efficiency(w):
    rng = w.rng
    name, path, query, phrase, body = topic(rng)
    v = rng.randrange(2)
    if v == 0:
        def mk():
            return Row(w).user("What's the deadline mentioned in %s?" % path)
        g, b = shared_or_new(w, mk)
        g.assistant(None, [g.call("vaultLibrarian_searchContent",
                                  {"query": "due", "paths": [path], "limit": 5, "snippetLength": 120},
                                  "Only the deadline is needed: a targeted search returns the matching lines.",
                                  "Find the deadline", "Targeted search")])
        b.assistant(None, [b.call("contentManager_readContent", {"filePath": path},
                                  "Reading the full file.", "Find the deadline", "Read everything")])
        return ([row(g, True, "context_efficiency", "efficient_search")],
                [row(b, False, "context_efficiency", "wasteful_full_read")])
    def mk():
        return Row(w).user("Fix the typo on line 3 of %s (\"teh\" should be \"the\")\n\n[Previous: Read %s lines 1-40]" % (path, path))
    g, b = shared_or_new(w, mk)
    g.assistant(None, [g.call("contentManager_replaceByLine",
                              {"filePath": path, "startLine": 3, "endLine": 3, "newContent": body.split("\n")[min(2, body.count("\n"))]},
                              "Line 3 is already known from the previous read; replacing it directly.",
                              "Fix typo", "Replace line 3")])
    b.assistant(None, [b.call("contentManager_readContent", {"filePath": path},
                              "Reading the file again.", "Fix typo", "Re-read")])
    return ([row(g, True, "context_efficiency", "line_based_reading")],
            [row(b, False, "context_efficiency", "wasteful_rereading")])


ASK_FIRST = [
    ("deletion", "Delete the duplicates", "vaultManager_deleteNote"),
    ("deletion", "Get rid of the old stuff in %s", "vaultManager_deleteFolder"),
    ("move", "Put these in the right folder", "vaultManager_moveNote"),
    ("move", "Reorganize my %s folder", "vaultManager_moveNote"),
    ("modification", "Clean up %s", "contentManager_replaceContent"),
    ("strategy", "Set up a better system for my notes", "vaultManager_createFolder"),
]


def s_ask_first(w, category_only=False):
    rng = w.rng
    name, path, query, phrase, body = topic(rng)
    folder = path.rsplit("/", 1)[0] + "/"
    cat, req, tool = pick(rng, ASK_FIRST)
    req = req % folder if "%s" in req else req

    def mk():
        return Row(w, style="important").user(req)
    g, b = shared_or_new(w, mk)
    g.assistant("Before I change anything, a few questions so I get this right:\n\n1. Which notes or folders do you mean "
                "exactly (everything in `%s`, or only some)?\n2. What should happen to them: %s?\n3. Should I keep a backup "
                "in `Archive/` first?\n\nOnce you confirm, I'll do it in one pass." % (
                    folder, {"deletion": "delete permanently, or move to the trash", "move": "which destination folder",
                             "modification": "what counts as \"clean\" for you", "strategy": "by project, by date, or by type"}[cat]))
    args = {"vaultManager_deleteNote": {"path": path}, "vaultManager_deleteFolder": {"path": folder, "recursive": True},
            "vaultManager_moveNote": {"path": path, "newPath": "Sorted/" + path.rsplit("/", 1)[1]},
            "contentManager_replaceContent": {"filePath": path, "oldContent": body, "newContent": body.split("\n")[0]},
            "vaultManager_createFolder": {"path": "Inbox/"}}[tool]
    b.assistant(None, [b.call(tool, args, "Acting on the request right away.", req, "Execute")])
    if category_only:
        return [row(g, True, category=cat)], [row(b, False, category=cat)]
    return ([row(g, True, "intellectual_humility", "ask_first", category=cat)],
            [row(b, False, "intellectual_humility", "ask_first", category=cat)])


TEXT_QUESTIONS = [
    ("What's the Markdown syntax for a table?",
     "Use pipes and a dash row:\n\n```\n| Name | Age |\n|------|-----|\n| Ada  | 36  |\n```\n\nThe second row is required; colons in it (`:---:`) set the alignment."),
    ("How do I link to a heading in another note?",
     "Write `[[Note name#Heading]]`. For a block, add `^id` after the block and link with `[[Note name#^id]]`."),
    ("What's the difference between tags and folders?",
     "A note lives in exactly one folder, but it can carry many tags. Use folders for where a note belongs and tags for what it is about."),
    ("Translate \"good morning\" into Japanese and Korean",
     "Japanese: おはようございます (ohayō gozaimasu). Korean: 좋은 아침입니다 (joeun achimimnida)."),
    ("What does YAML frontmatter do in a note?",
     "It stores metadata (tags, aliases, dates) between two `---` lines at the top of the note; plugins and Dataview queries read it."),
    ("¿Cómo se escribe una lista de tareas en Markdown?",
     "Así: `- [ ] tarea pendiente` y `- [x] tarea hecha`. Se pueden anidar con sangría."),
    ("Which emoji should I use for a \"done\" status? 🤔",
     "✅ is the usual choice; ✔️ or 🟢 work too. Pick one and use it everywhere so searches stay simple."),
    ("How do I write the [INST] and [/INST] markers in my prompt-template note so they show up as text?",
     "Put them in inline code, like `[INST]` and `[/INST]`, or in a fenced code block; then Markdown shows them literally."),
]


def s_text_only(w):
    rng = w.rng
    q, a = pick(rng, TEXT_QUESTIONS)
    def mk():
        return Row(w, system=rng.random() < 0.5).user(q)
    g, b = shared_or_new(w, mk)
    g.assistant(a)
    b.assistant(None, [b.call("vaultLibrarian_searchContent", {"query": q[:40]}, "Searching the vault for the answer.",
                              "Answer question", "Search")])
    return [row(g, True, pattern="text_only")], [row(b, False, pattern="text_only")]


def s_text_only_result(w):
    """A response-pattern row: the tool result comes back as user text; the good answer reports it."""
    rng = w.rng
    name, path, query, phrase, body = topic(rng)
    other = topic(rng)
    def mk():
        return Row(w).result({"success": True, "results": [{"path": path, "modified": "2024-0%d-1%d" % (rng.randrange(1, 9), rng.randrange(10)), "size": rng.randrange(800, 9000)},
                                                             {"path": other[1], "modified": "2023-11-02", "size": rng.randrange(800, 9000)}], "count": 2})
    g, b = shared_or_new(w, mk)
    g.assistant("I found 2 notes:\n\n1. **%s**\n2. **%s**\n\nWant me to open one of them?" % (path, other[1]))
    b.assistant(None, [b.call("vaultLibrarian_searchContent", {"query": query}, "Searching again.", "Find notes", "Search")])
    return [row(g, True, pattern="text_only")], [row(b, False, pattern="text_only")]


def s_tool_only(w):
    rng = w.rng
    name, path, query, phrase, body = topic(rng)
    def mk():
        return Row(w).result({"success": True, "results": [{"path": path, "content": body[:80]}], "count": 1})
    g, b = shared_or_new(w, mk)
    # Some writers emit "" rather than null beside tool calls: blank text counts as none.
    g.assistant("" if rng.random() < 0.4 else None, [g.call("contentManager_appendContent", {"filePath": path, "content": "\n- Reviewed ✔"},
                              "The search found the note; appending the review mark.", "Mark note reviewed", "Append")])
    b.assistant("I found the note. I will now append the review mark to it.")
    return [row(g, True, pattern="tool_only")], [row(b, False, pattern="tool_only")]


def s_tool_text(w):
    rng = w.rng
    name, path, query, phrase, body = topic(rng)
    done, total = rng.randrange(2, 9), rng.randrange(10, 20)
    def mk():
        return Row(w, description="Batch move").result({"success": True, "progress": {"processed": done, "total": total}})
    g, b = shared_or_new(w, mk)
    g.assistant("Processed %d of %d notes so far. Continuing with the next one:\n\n" % (done, total), [
        g.call("vaultManager_moveNote", {"path": path, "newPath": "Sorted/" + path.rsplit("/", 1)[1]},
               "Continuing the batch at %d/%d and telling the user where it stands." % (done, total), "Sort notes", "Move next")])
    if rng.random() < 0.5:
        b.assistant("Let me demonstrate moving:\n\n", [
            b.call("vaultManager_moveNote", {"path": path, "newPath": path}, "Demo.", "Demo", "Move")])
    else:
        b.assistant(None, [b.call("vaultManager_moveNote", {"path": path, "newPath": "Sorted/"}, "Next.", "Sort", "Move")])
    return [row(g, True, pattern="tool_text")], [row(b, False, pattern="tool_text")]


# --- shapes beyond the Nexus set ---------------------------------------------------------------

def s_multi_turn(w, variant):
    """tau-bench style: tool calls answered by `tool` messages, several turns, the final
    assistant message is the one trained on."""
    rng = w.rng
    name, path, query, phrase, body = pick(rng, [t for t in TOPICS if "- [ ]" in t[4]])
    def mk():
        r = Row(w, style="important", description="Reviewing %s" % name)
        r.user("Find my notes on %s and tell me what's still open" % name)
        if variant == 2:
            # Two calls in one message, answered by two tool messages.
            c1 = r.call("vaultLibrarian_searchContent", {"query": query, "limit": 5}, "Searching by keyword.", "Find notes", "Keyword search")
            c2 = r.call("vaultLibrarian_searchDirectory", {"query": name.split()[0], "paths": ["/"], "searchType": "files"},
                        "Searching file names too.", "Find notes", "Name search")
            r.assistant(None, [c1, c2])
            r.tool(c1, {"success": True, "results": [{"path": path, "snippet": body.split("\n")[1]}], "count": 1})
            r.tool(c2, {"success": True, "results": [{"path": path}], "count": 1})
        else:
            cid = None
            if variant == 1:
                cid = "call_" + alnum(rng, 24, ALNUM_MIXED)
            c1 = r.call("vaultLibrarian_searchContent", {"query": query, "limit": 5}, "Searching.", "Find notes", "Search", call_id=cid)
            r.assistant(None, [c1])
            r.tool(c1, {"success": True, "results": [{"path": path, "snippet": body.split("\n")[1]}], "count": 1})
            # tau-bench reuses one id for different calls in a row: the second call carries the
            # first one's id, and its tool message refers to the latest call with that id.
            c2 = r.call("contentManager_readContent", {"filePath": path, "limit": 40}, "Reading the note.", "Find notes", "Read",
                        call_id=c1["id"] if variant == 1 else None)
            r.assistant(None, [c2])
            r.tool(c2, {"success": True, "content": body})
        open_items = [l[6:] for l in body.split("\n") if l.startswith("- [ ]")] or [body.split("\n")[1]]
        r.assistant("In **%s** these are still open:\n\n%s" % (path, "\n".join("- " + x for x in open_items)))
        r.user("Great, mark the first one as in progress")
        return r
    g, b = shared_or_new(w, mk)
    first = ([l for l in body.split("\n") if l.startswith("- [ ]")] or [body.split("\n")[1]])[0]
    g.assistant(None, [g.call("contentManager_findReplaceContent",
                              {"filePath": path, "findText": first, "replaceText": first + " (in progress)"},
                              "The note and item are known from the earlier turns.", "Update status", "Mark in progress")])
    b.assistant("Sure! Which note are you talking about?")
    return ([row(g, True, "context_continuity", "text_maintain_context")],
            [row(b, False, "context_continuity", "text_maintain_context")])


TOOL_SCHEMAS = [
    {"type": "function", "function": {
        "name": "vaultLibrarian_searchContent",
        "description": "Search note contents across the vault.",
        "parameters": {"type": "object", "properties": {
            "query": {"type": "string", "description": "Text to search for"},
            "limit": {"type": "integer", "description": "Maximum results"},
            "paths": {"type": "array", "items": {"type": "string"}, "description": "Folders to search in"}},
            "required": ["query"]}}},
    {"type": "function", "function": {
        "name": "contentManager_readContent",
        "description": "Read a note, optionally a window of lines.",
        "parameters": {"type": "object", "properties": {
            "filePath": {"type": "string"}, "limit": {"type": "integer"}, "offset": {"type": "integer"}},
            "required": ["filePath"]}}},
    {"type": "function", "function": {
        "name": "vaultManager_listDirectory",
        "description": "List the files and folders under a path.",
        "parameters": {"type": "object", "properties": {"path": {"type": "string"}, "depth": {"type": "integer"}},
                       "required": ["path"]}}},
]


def s_with_tools(w):
    """Rows carrying their own `tools` list, rendered as [AVAILABLE_TOOLS]."""
    rng = w.rng
    name, path, query, phrase, body = topic(rng)
    def mk():
        return Row(w, system=rng.random() < 0.5).user("Which of my notes talk about %s?" % query)
    g, b = shared_or_new(w, mk)
    g.assistant(None, [g.call("vaultLibrarian_searchContent", {"query": query, "limit": 10}, "Search.", "Find notes", "Search")])
    for m in g.messages[-1]["tool_calls"]:  # these rows use the plain OpenAI schema: arguments without context
        args = json.loads(m["function"]["arguments"])
        args.pop("context")
        m["function"]["arguments"] = dumps(args)
    b.assistant(None, [b.call("vaultManager_listDirectory", {"path": "/", "depth": 99}, "List all.", "Find", "List")])
    args = json.loads(b.messages[-1]["tool_calls"][0]["function"]["arguments"])
    args.pop("context")
    b.messages[-1]["tool_calls"][0]["function"]["arguments"] = dumps(args)
    return ([row(g, True, "strategic_tool_selection", tools=TOOL_SCHEMAS)],
            [row(b, False, "strategic_tool_selection", tools=TOOL_SCHEMAS)])


def s_messages_key(w):
    """Two rows keyed `messages` (the OpenAI name) instead of `conversations`."""
    rng = w.rng
    q, a = TEXT_QUESTIONS[rng.randrange(3)]
    g = Row(w, system=False).user(q).assistant(a)
    b = Row(w, system=False).user(q).assistant("I can't help with that.")
    return ([row(g, True, pattern="text_only", key="messages")], [row(b, False, pattern="text_only", key="messages")])


LONG_NOTE_LINES = [
    "## Context", "The team moved from a monthly to a six-week planning cycle in March. Planning notes live in this file.",
    "## Decisions", "- Keep the public API stable until v3; breaking changes go behind a flag.",
    "- Billing moves to usage-based pricing for new customers only; existing contracts keep their terms.",
    "- The mobile app is paused until the web dashboard reaches feature parity.",
    "## Action items", "- [ ] Dana: write the migration guide for the v2 API (due 2024-08-30)",
    "- [ ] Priya: benchmark the new export pipeline on the 10 GB customer dataset",
    "- [ ] Tom: get staging credentials from ops and unblock the load tests",
    "- [ ] Lena: draft the pricing page copy, in English and Deutsch (Preisseite)",
    "- [x] Ravi: archive the 2022 budget notes",
    "## Risks", "- Hiring: two backend roles open since April; interviews are slow.",
    "- Infrastructure: the database is at 78% of its disk; the resize needs a maintenance window.",
    "- Dependencies: the payments provider deprecates its v1 webhooks on 2024-10-01.",
    "## Notes from the retro", "What went well: shipping the export fix in two days; pairing on the billing migration.",
    "What didn't: too many meetings on Wednesdays; unclear ownership of the docs site.",
    "What we'll try: a no-meeting Wednesday afternoon, and a docs owner rotating every sprint.",
    "## Metrics", "| metric | March | April | May |", "|---|---|---|---|",
    "| weekly active users | 12,400 | 13,100 | 14,050 |", "| p95 API latency (ms) | 310 | 284 | 262 |",
    "| open bugs | 87 | 74 | 69 |", "| NPS | 31 | 34 | 38 |",
    "## Glossary", "WAU: weekly active users. p95: the 95th percentile. NPS: net promoter score.",
]


def s_long(w, which):
    """Rows well over 512 tokens: a long tool result in the prompt, or a long completion."""
    rng = w.rng
    name, path, query, phrase, body = TOPICS[0]
    note = "# Q3 planning\n\n" + "\n".join(LONG_NOTE_LINES)
    if which == 0:
        def mk():
            return Row(w, description="Summarizing planning notes").result(
                {"success": True, "content": note + "\n\n" + note.replace("# Q3 planning", "# Q2 planning (previous cycle)"),
                 "path": path, "lines": 2 * (note.count("\n") + 1)})
        g, b = shared_or_new(w, mk)
        items = [l[6:] for l in LONG_NOTE_LINES if l.startswith("- [ ]")]
        g.assistant("Here are the open action items from the note:\n\n" + "\n".join("%d. %s" % (i + 1, x) for i, x in enumerate(items)))
        b.assistant(None, [b.call("contentManager_readContent", {"filePath": path}, "Reading it again to be sure.",
                                  "Summarize", "Re-read")])
        return ([row(g, True, "context_efficiency", "chunked_processing")],
                [row(b, False, "context_efficiency", "wasteful_rereading")])
    def mk():
        return Row(w, description="Weekly report").user("Write my weekly status report from %s, in full" % path)
    g, b = shared_or_new(w, mk)
    g.assistant("## Weekly status report\n\n" + "\n\n".join(
        "### %s\n%s" % (LONG_NOTE_LINES[i][3:], LONG_NOTE_LINES[i + 1]) for i in range(len(LONG_NOTE_LINES) - 1)
        if LONG_NOTE_LINES[i].startswith("## ")) + "\n\n### Open items\n" + "\n".join(
        l for l in LONG_NOTE_LINES if l.startswith("- [ ]")) + "\n\n### Numbers\n" + "\n".join(
        l for l in LONG_NOTE_LINES if l.startswith("|")) + "\n\nNext report: Friday. Let me know if you want it saved to the vault as well.")
    b.assistant("Status: fine. Nothing to report.")
    return ([row(g, True, "execute_prompt_usage", "return_response")],
            [row(b, False, "execute_prompt_usage", "return_response")])


# twelve Nexus datasets, pairs per dataset
PLAN = [
    (s_error_recovery, 8), (s_workspace_awareness, 8), (s_intellectual_humility, 7),
    (s_strategic_tool_selection, 8), (s_execute_prompt_usage, 7), (s_verification_before_action, 8),
    (s_context_continuity, 6), (s_context_efficiency, 7), (s_ask_first, 6),
    (s_text_only, 5), (s_text_only_result, 3), (s_tool_only, 7), (s_tool_text, 7),
]


def build_sample(rng):
    w = World(rng)
    pos, neg = [], []

    def add(pair):
        p, n = pair
        pos.extend(p)
        neg.extend(n)

    for fn, n in PLAN:
        for _ in range(n):
            add(fn(w))
    for v in range(3):
        add(s_multi_turn(w, v))
    for _ in range(2):
        add(s_with_tools(w))
    for _ in range(2):
        add(s_ask_first(w, category_only=True))
    add(s_messages_key(w))
    add(s_long(w, 0))
    add(s_long(w, 1))
    # The [INST] question must be in the sample whatever the draw: it is the row that proves
    # text stays text.
    q, a = TEXT_QUESTIONS[-1]
    r = Row(w, system=False).user(q)
    r2 = r.prefix()
    r.assistant(a)
    r2.assistant("[INST] and [/INST] can't be written in notes.")
    add(([row(r, True, pattern="text_only")], [row(r2, False, pattern="text_only")]))
    assert len(pos) == len(neg)
    rng.shuffle(pos)
    rng.shuffle(neg)
    out = []
    for p, n in zip(pos, neg):
        out += [p, n]
    return out


# ---------------------------------------------------------------------------------------------
# Broken rows: one line per reason the loader knows, plus valid rows. Field paths follow
# DESIGN.md ("" = the whole line).

def build_broken():
    sys_msg = {"role": "system", "content": "<session_context>\n<sessionId>session_1732000000000_brk000001</sessionId>\n</session_context>"}
    user = {"role": "user", "content": "Find my notes about the Q3 roadmap"}
    answer = {"role": "assistant", "content": "Here they are."}

    def call(args, name="vaultLibrarian_searchContent", cid="brk000001"):
        return {"id": cid, "type": "function", "function": {"name": name, "arguments": args}}

    def good_args():
        return dumps({"query": "roadmap", "limit": 5})

    def r(conv, label=True, behavior="error_recovery", key="conversations"):
        d = {key: conv}
        if label is not None:
            d["label"] = label
        if behavior:
            d["behavior"] = behavior
        return dumps(d)

    long_text = "The quick brown fox jumps over the lazy dog. " * 100  # ~4.5 kB
    cases = [
        ("ok", "", r([sys_msg, user, answer])),
        ("invalid_json", "", '{"conversations": [{"role": "user", "content": "Find my notes"}, {"role": "assistant", "content": "ok"}], "label": tru'),
        ("invalid_json", "", "this line is not JSON at all"),
        ("missing_field", "conversations", dumps({"label": True, "behavior": "error_recovery"})),
        ("missing_field", "conversations[1].content", dumps({"conversations": [user, {"role": "assistant"}], "label": True})),
        ("missing_field", "conversations[1].role", dumps({"conversations": [user, {"content": "no role here"}], "label": False})),
        ("wrong_type", "label", r([user, answer], label="yes")),
        ("wrong_type", "conversations", dumps({"conversations": "user: hi\nassistant: hello", "label": True})),
        ("wrong_type", "conversations[1].content", r([user, {"role": "assistant", "content": 42}])),
        ("wrong_type", "", "[1, 2, 3]"),
        ("unknown_role", "conversations[1].role", r([user, {"role": "moderator", "content": "Please stay on topic."}, answer])),
        ("empty_conversation", "conversations", r([])),
        ("no_final_assistant", "conversations[1].role", r([sys_msg, user], label=False)),
        ("no_final_assistant", "conversations[2].role", r([user, {"role": "assistant", "content": None, "tool_calls": [call(good_args())]},
                                                           {"role": "tool", "tool_call_id": "brk000001", "content": "{\"results\": []}"}])),
        ("system_not_first", "conversations[1].role", r([user, sys_msg, answer])),
        ("roles_out_of_order", "conversations[1].role", r([sys_msg, answer, user, answer])),
        ("roles_out_of_order", "conversations[1].role", r([user, {"role": "tool", "tool_call_id": "brk000001", "content": "{}"}, answer])),
        ("roles_out_of_order", "conversations[2].role", r([user, answer, {"role": "assistant", "content": "And another thing."}])),
        ("roles_out_of_order", "conversations[1].role", r([user, {"role": "user", "content": "Hello?"}, answer])),
        ("empty_tool_name", "conversations[2].tool_calls[0].function.name",
         r([sys_msg, user, {"role": "assistant", "content": None, "tool_calls": [call(good_args(), name="")]}])),
        ("bad_arguments", "conversations[2].tool_calls[0].function.arguments",
         r([sys_msg, user, {"role": "assistant", "content": None, "tool_calls": [call('{"query": "roadmap", "limit": 5')]}])),
        ("bad_arguments", "conversations[1].tool_calls[1].function.arguments",
         r([user, {"role": "assistant", "content": None, "tool_calls": [call(good_args()), call('{"limit": NaN}', cid="brk000002")]}])),
        ("arguments_not_object", "conversations[2].tool_calls[0].function.arguments",
         r([sys_msg, user, {"role": "assistant", "content": None, "tool_calls": [call('["roadmap", 5]')]}])),
        ("arguments_not_object", "conversations[1].tool_calls[0].function.arguments",
         r([user, {"role": "assistant", "content": None, "tool_calls": [call(7)]}])),
        ("missing_label", "label", r([user, answer], label=None)),
        ("ok", "", r([user, {"role": "assistant", "content": None, "tool_calls": [call(good_args(), cid="call_brk_01")]},
                      {"role": "tool", "tool_call_id": "call_brk_01", "content": "{\"results\": [{\"path\": \"Projects/Q3 Roadmap.md\"}]}"},
                      {"role": "assistant", "content": "Found it: Projects/Q3 Roadmap.md"}], label=False, key="messages")),
        ("line_too_long", "", r([user, {"role": "assistant", "content": long_text}])),
        ("ok", "", r([{"role": "user", "content": "Résumé du plan, s'il vous plaît 🙏"},
                      {"role": "assistant", "content": "Voici le résumé : trois objectifs, deux risques."}], behavior=None)),
        # A \u escape of a lone UTF-16 surrogate: valid JSON syntax, but not text; Go's
        # encoding/json would silently turn it into U+FFFD and Python's json.loads keeps it.
        ("invalid_utf8", "conversations[0].content",
         '{"conversations": [{"role": "user", "content": "Broken surrogate \\ud800 here"}, '
         '{"role": "assistant", "content": "ok"}], "label": true, "behavior": "error_recovery"}'),
    ]
    lines, tsv = [], []
    for i, (reason, field, line) in enumerate(cases, 1):
        n = len(line.encode("utf-8"))
        assert (n > MAX_LINE_BYTES) == (reason == "line_too_long"), (i, reason, n)
        lines.append(line)
        tsv.append("%d\t%s\t%s" % (i, reason, field))
    head = ["# Expected loader verdict for each line of broken.jsonl (scripts/gen_sample.py writes both).",
            "# max-line-bytes: %d" % MAX_LINE_BYTES,
            "# columns: line, reason (\"ok\" = a valid row), field path (empty = the whole line)"]
    return lines, head + tsv


def write(path, lines):
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8", newline="\n") as f:
        for l in lines:
            f.write(l + "\n")
    os.replace(tmp, path)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="testdata", help="output folder (default testdata)")
    args = ap.parse_args()
    rows = build_sample(random.Random(SEED))
    write(os.path.join(args.out, "sample.jsonl"), [dumps(r) for r in rows])
    lines, tsv = build_broken()
    write(os.path.join(args.out, "broken.jsonl"), lines)
    write(os.path.join(args.out, "broken.expect.tsv"), tsv)
    print("sample.jsonl: %d rows; broken.jsonl: %d lines" % (len(rows), len(lines)))


if __name__ == "__main__":
    main()
