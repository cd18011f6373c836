/* rlmx trajectory viewer. Vanilla JS, no network, no dependencies.
 *
 * Safety: every piece of logged text is untrusted model output. It is only ever put
 * into the page through textContent / createTextNode, never innerHTML.
 * Speed: the data is one JSON block; iteration cards are added a page at a time and a
 * card's body is built only when it scrolls near the viewport (IntersectionObserver).
 */
(function () {
  "use strict";

  var DATA = JSON.parse(document.getElementById("rlm-data").textContent);
  var RUNS = DATA.runs, ITERS = DATA.iters;
  var PAGE = 100;   // iteration cards added per page
  var AUTO_OPEN = 30; // lists up to this long start with every card open
  var CLIP = 1200;  // characters kept at each end of a long text

  var state = {
    run: null,        // selected run id
    query: "",        // lower-cased search text
    matches: null,    // Uint8Array over ITERS, null when not searching
    runMatches: null, // matches per run (own iterations)
    list: [],         // iteration indexes the timeline shows
    shown: 0,         // how many of them have cards
    toggled: {},      // iteration index -> open/closed as the user last set it
    autoOpen: true,   // cards start open when the list is short
  };
  var hay = null;       // lower-cased searchable text per iteration, built on first search
  var treeRows = {};    // run id -> tree row element (only for rendered nodes)
  var cards = {};       // iteration index -> card element in the timeline
  var observer = null;  // renders bodies near the viewport
  var pager = null;     // adds the next page when the sentinel shows

  // -- small helpers ----------------------------------------------------------------

  function el(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }
  function $(id) { return document.getElementById(id); }
  function plural(n, word) { return fmtInt(n) + " " + word + (n === 1 ? "" : "s"); }
  function fmtInt(n) {
    n = n || 0;
    if (n < 10000) return n.toLocaleString("en-US");
    if (n < 1e6) return (n / 1000).toFixed(n < 1e5 ? 1 : 0) + "k";
    return (n / 1e6).toFixed(1) + "M";
  }
  function fmtCost(c) {
    if (c === 0) return "$0";
    if (c < 0.000001) return "<$0.000001";
    if (c < 0.01) return "$" + c.toFixed(6).replace(/0+$/, "");
    return "$" + (c < 10 ? c.toFixed(4).replace(/0{1,2}$/, "") : c.toFixed(2));
  }
  function fmtTime(s) {
    if (s === null || s === undefined) return "";
    if (s < 0.001) return "<1 ms";
    if (s < 1) return Math.round(s * 1000) + " ms";
    if (s < 120) return s.toFixed(s < 10 ? 2 : 1) + " s";
    return Math.floor(s / 60) + " min " + Math.round(s % 60) + " s";
  }
  function firstLine(text, max) {
    var line = (text || "").trim().split("\n")[0] || "";
    return line.length > max ? line.slice(0, max) + "…" : line;
  }
  function hasUsage(u) {
    return !!u && (u.calls || u.input || u.output || u.cost !== undefined);
  }
  function usageBadge(u, prefix, compact) {
    if (!hasUsage(u)) return null;
    var parts = compact
      ? [fmtInt((u.input || 0) + (u.output || 0)) + " tok"]
      : [plural(u.calls || 0, "call"), fmtInt(u.input) + " in / " + fmtInt(u.output) + " out"];
    if (u.cost !== undefined) parts.push(fmtCost(u.cost));
    var badge = el("span", "badge usage", (prefix ? prefix + " " : "") + parts.join(" · "));
    badge.title = (u.calls || 0) + " calls, " + (u.input || 0) + " input tokens, " +
      (u.output || 0) + " output tokens" + (u.cost !== undefined ? ", $" + u.cost : ", cost unknown");
    return badge;
  }
  function badge(text, cls, title) {
    var b = el("span", "badge " + (cls || ""), text);
    if (title) b.title = title;
    return b;
  }
  function add(parent) {
    for (var i = 1; i < arguments.length; i++) if (arguments[i]) parent.appendChild(arguments[i]);
    return parent;
  }

  // -- text with highlighting and truncation ---------------------------------------

  function appendMarked(parent, text, q) {
    if (!q) { parent.appendChild(document.createTextNode(text)); return; }
    var lower = text.toLowerCase(), at = 0, hit;
    while ((hit = lower.indexOf(q, at)) !== -1) {
      if (hit > at) parent.appendChild(document.createTextNode(text.slice(at, hit)));
      parent.appendChild(el("mark", null, text.slice(hit, hit + q.length)));
      at = hit + q.length;
    }
    if (at < text.length) parent.appendChild(document.createTextNode(text.slice(at)));
  }

  /* Markdown code fences in a reply, set apart so prose and code read differently. A
   * fence that is one of the iteration's executed blocks becomes a pointer to it, so
   * the code is not shown twice. */
  function appendFenced(parent, text, q, blocks) {
    var parts = text.split(/^```[^\n]*$/m);
    if (parts.length < 3) { appendMarked(parent, text, q); return; }
    var codes = blocks.map(function (b) { return b.code.trim(); });
    parts.forEach(function (part, k) {
      if (k % 2 === 0 || k === parts.length - 1) { appendMarked(parent, part.replace(/^\n+|\n+$/g, ""), q); return; }
      var body = part.replace(/^\n|\n$/g, "");
      var ran = codes.indexOf(body.trim());
      if (ran !== -1) {
        parent.appendChild(el("span", "fence-ref", "⤷ code block " + (ran + 1) + " (below)"));
        return;
      }
      var code = el("span", "fence");
      appendMarked(code, body, q);
      parent.appendChild(code);
    });
  }

  /* A <pre> holding `text`; past 2*CLIP characters only both ends are shown, with an
   * explicit "… N characters hidden — show all" toggle in between. */
  function textBlock(text, cls, clip, fenced) {
    var pre = el("pre", "text " + (cls || ""));
    clip = clip || CLIP;
    text = text || "";
    function clipped() {
      pre.textContent = "";
      var hidden = text.length - 2 * clip;
      appendMarked(pre, text.slice(0, clip), state.query);
      var middle = text.slice(clip, text.length - clip);
      var label = "… " + hidden.toLocaleString("en-US") + " characters hidden — show all";
      if (state.query && middle.toLowerCase().indexOf(state.query) !== -1) label += " (has matches)";
      var more = el("button", "more", label);
      more.type = "button";
      more.addEventListener("click", full);
      pre.appendChild(more);
      appendMarked(pre, text.slice(text.length - clip), state.query);
    }
    function full() {
      pre.textContent = "";
      appendMarked(pre, text, state.query);
      var less = el("button", "more", "show less");
      less.type = "button";
      less.addEventListener("click", clipped);
      pre.appendChild(less);
    }
    if (text.length > 2 * clip + 200) clipped();
    else if (fenced) appendFenced(pre, text, state.query, fenced);
    else appendMarked(pre, text, state.query);
    return pre;
  }

  // -- header ------------------------------------------------------------------------

  function renderHeader() {
    var s = DATA.summary;
    $("title").textContent = DATA.title;
    var box = $("summary");
    var chips = el("div", "chips");
    add(chips, s.model ? badge(s.model, "model", "root model") : null);
    Object.keys(s.meta).forEach(function (k) {
      var v = s.meta[k];
      chips.appendChild(badge(k.replace(/_/g, " ") + ": " + (typeof v === "object" ? JSON.stringify(v) : v), "meta"));
    });
    if (s.started) chips.appendChild(badge(s.started.replace("T", " ").slice(0, 19), "meta", "started"));
    var stats = el("div", "stats");
    add(stats,
      stat(s.iterations, "iterations"),
      s.child_runs ? stat(s.child_runs, "child runs") : null,
      stat(s.subcalls, "sub-calls"),
      s.errors ? stat(s.errors, "with errors", "err") : null,
      s.execution_time !== null ? stat(fmtTime(s.execution_time), "elapsed") : null);
    var total = usageBadge(s.usage, s.usage_reported ? "total:" : "sub-calls:");
    if (total) {
      if (!s.usage_reported) total.title += " (the log records sub-call usage only)";
      stats.appendChild(total);
    }
    add(box, chips, stats);
    if (s.answer !== null && s.answer !== undefined) {
      var answer = el("div", "answer");
      add(answer, el("span", "answer-label", "Answer"), textBlock(s.answer, "answer-text", 300));
      box.appendChild(answer);
    }
    if (s.error) add(box, el("div", "run-error", s.error));
  }
  function stat(value, label, cls) {
    if (value === 1 && /s$/.test(label)) label = label.slice(0, -1);
    var node = el("span", "stat " + (cls || ""));
    add(node, el("b", null, typeof value === "number" ? fmtInt(value) : value), document.createTextNode(" " + label));
    return node;
  }

  // -- run tree ----------------------------------------------------------------------

  function subtreeMatches(id) {
    if (!state.runMatches) return 0;
    var total = state.runMatches[id], kids = RUNS[id].children;
    for (var i = 0; i < kids.length; i++) total += subtreeMatches(kids[i]);
    return total;
  }

  function treeNode(id) {
    var run = RUNS[id];
    var li = el("li", "tree-node");
    li.setAttribute("role", "treeitem");
    var row = el("div", "node-row");
    row.dataset.run = id;
    var toggle = el("button", "twisty", run.children.length ? "▸" : "");
    toggle.type = "button";
    toggle.disabled = !run.children.length;
    toggle.setAttribute("aria-label", "expand");
    var label = el("button", "node-label");
    label.type = "button";
    var parentModel = run.parent === null ? null : RUNS[run.parent].model;
    add(label, el("span", "kind" + (run.via ? " child" : ""), run.label),
      run.model && run.model !== parentModel ? el("span", "node-model", run.model) : null,
      run.prompt ? el("span", "node-prompt", firstLine(run.prompt, 48)) : null);
    var meta = el("div", "node-meta");
    add(meta, badge(plural(run.iterations.length, "iteration"), "count"),
      run.children.length ? badge(plural(run.children.length, "child"), "count") : null,
      usageBadge(run.usage, "", true), run.error ? badge("error", "err", run.error) : null,
      el("span", "match-badge"));
    add(row, toggle, label);
    add(li, row, meta);
    label.addEventListener("click", function () { selectRun(id); });
    toggle.addEventListener("click", function () { setExpanded(li, id, !li.classList.contains("open")); });
    treeRows[id] = li;
    updateTreeBadge(id);
    if (state.run === id) li.classList.add("selected");
    return li;
  }

  function setExpanded(li, id, open) {
    if (!RUNS[id].children.length) return;
    if (open && !li.querySelector(":scope > ul")) {
      var ul = el("ul", "tree");
      ul.setAttribute("role", "group");
      RUNS[id].children.forEach(function (kid) { ul.appendChild(treeNode(kid)); });
      li.appendChild(ul);
    }
    li.classList.toggle("open", open);
    var toggle = li.querySelector(":scope > .node-row > .twisty");
    toggle.textContent = open ? "▾" : "▸";
    toggle.setAttribute("aria-label", open ? "collapse" : "expand");
    li.setAttribute("aria-expanded", String(open));
  }

  function revealInTree(id) {
    var chain = [];
    for (var p = RUNS[id].parent; p !== null; p = RUNS[p].parent) chain.unshift(p);
    chain.forEach(function (a) { if (treeRows[a]) setExpanded(treeRows[a], a, true); });
  }

  function updateTreeBadge(id) {
    var li = treeRows[id];
    if (!li) return;
    var spot = li.querySelector(":scope > .node-meta > .match-badge");
    var n = subtreeMatches(id);
    spot.textContent = state.matches ? n + " match" + (n === 1 ? "" : "es") : "";
    spot.className = "match-badge" + (state.matches ? (n ? " hit" : " none") : "");
    li.classList.toggle("dim", !!state.matches && n === 0);
  }

  function renderTree() {
    var tree = $("tree");
    tree.textContent = "";
    DATA.roots.forEach(function (id) { tree.appendChild(treeNode(id)); });
    $("expand-all").addEventListener("click", function () {
      Object.keys(RUNS).forEach(function (id) {
        revealInTree(+id);
        if (treeRows[id]) setExpanded(treeRows[id], +id, true);
      });
    });
  }

  // -- run detail ----------------------------------------------------------------------

  function selectRun(id, focusIteration) {
    if (treeRows[state.run]) treeRows[state.run].classList.remove("selected");
    state.run = id;
    if (id === null) { renderDetail(); return; }
    revealInTree(id);
    if (treeRows[id]) treeRows[id].classList.add("selected");
    renderDetail();
    if (focusIteration !== undefined) showIteration(focusIteration);
    else $("detail").scrollTop = 0;
  }

  function runHead(run) {
    var head = el("section", "run-head card");
    var title = el("div", "run-title");
    add(title, el("h2", null, run.label), run.model ? badge(run.model, "model") : null,
      badge("depth " + run.depth, "meta"), run.key ? badge(run.key, "meta", "run_id") : null);
    head.appendChild(title);
    var path = el("div", "crumbs");
    var chain = [];
    for (var p = run.parent; p !== null; p = RUNS[p].parent) chain.unshift(p);
    chain.forEach(function (a) {
      var link = el("button", "link", RUNS[a].label + (RUNS[a].model ? " · " + RUNS[a].model : ""));
      link.type = "button";
      link.addEventListener("click", function () { selectRun(a); });
      add(path, link, el("span", "sep", "›"));
    });
    if (chain.length) { path.appendChild(el("span", null, run.label)); head.appendChild(path); }
    if (run.via) {
      var from = ITERS[run.via[0]];
      var link = el("button", "link", "spawned by iteration #" + from.n + ", code block " + (run.via[1] + 1));
      link.type = "button";
      link.addEventListener("click", function () { selectRun(from.run, run.via[0]); });
      head.appendChild(link);
    }
    var stats = el("div", "stats");
    add(stats, stat(run.iterations.length, "iterations"),
      run.children.length ? stat(run.children.length, "child runs") : null);
    var total = usageBadge(run.usage, run.usage_reported ? "total:" : "sub-calls:");
    if (total) stats.appendChild(total);
    head.appendChild(stats);
    if (run.usage.models && Object.keys(run.usage.models).length > 1) {
      var models = el("div", "models");
      Object.keys(run.usage.models).forEach(function (m) {
        add(models, el("span", "model-name", m), usageBadge(run.usage.models[m]));
      });
      head.appendChild(models);
    }
    if (run.prompt) add(head, el("h4", null, "Prompt"), textBlock(run.prompt, "prompt", 400));
    if (run.response !== null) add(head, el("h4", null, "Response"), textBlock(run.response, run.error ? "stderr" : "answer-text", 400));
    if (run.metadata) head.appendChild(metadataTable(run.metadata));
    return head;
  }

  function metadataTable(meta) {
    var details = el("details", "meta-table");
    details.appendChild(el("summary", null, "Run metadata"));
    var table = el("table");
    Object.keys(meta).forEach(function (k) {
      var v = meta[k];
      var tr = el("tr");
      add(tr, el("th", null, k), el("td", null, typeof v === "string" ? v : JSON.stringify(v)));
      table.appendChild(tr);
    });
    details.appendChild(table);
    return details;
  }

  function renderDetail() {
    var detail = $("detail");
    detail.textContent = "";
    cards = {};
    state.shown = 0;
    if (observer) observer.disconnect();
    if (pager) pager.disconnect();
    if (state.run === null) { detail.appendChild(el("p", "empty", "This log holds no runs.")); return; }
    var run = RUNS[state.run];
    detail.appendChild(runHead(run));
    state.list = run.iterations.filter(function (i) { return !state.matches || state.matches[i]; });
    state.autoOpen = state.list.length <= AUTO_OPEN;
    var bar = el("div", "toolbar");
    var heading = state.matches
      ? plural(state.list.length, "matching iteration") + " of " + fmtInt(run.iterations.length)
      : plural(run.iterations.length, "iteration");
    add(bar, el("h3", null, heading), run.iterations.length > AUTO_OPEN ? jumpBox(run) : null,
      toolButton("expand all", false), toolButton("collapse all", true));
    detail.appendChild(bar);
    var timeline = el("div", "timeline");
    timeline.id = "timeline";
    detail.appendChild(timeline);
    if (!state.list.length) {
      timeline.appendChild(el("p", "empty", state.matches ? "No iteration of this run matches." : "No iterations recorded."));
      if (state.matches) timeline.appendChild(otherMatches());
    }
    var more = el("button", "show-more");
    more.type = "button";
    more.id = "show-more";
    more.addEventListener("click", addPage);
    detail.appendChild(more);
    observer = new IntersectionObserver(onVisible, { root: detail, rootMargin: "600px 0px" });
    pager = new IntersectionObserver(function (entries) {
      if (entries.some(function (e) { return e.isIntersecting; })) addPage();
    }, { root: detail, rootMargin: "400px 0px" });
    addPage();
    pager.observe(more);
  }

  function toolButton(label, collapse) {
    var b = el("button", "link", label);
    b.type = "button";
    b.addEventListener("click", function () {
      state.list.forEach(function (i) { state.toggled[i] = !collapse; });
      Object.keys(cards).forEach(function (i) { setOpen(cards[i], +i, !collapse); });
    });
    return b;
  }

  function jumpBox(run) {
    var box = el("input", "jump");
    box.type = "number";
    box.min = 1;
    box.placeholder = "go to #";
    box.setAttribute("aria-label", "Go to iteration number");
    box.addEventListener("keydown", function (e) {
      if (e.key !== "Enter") return;
      var n = +box.value;
      var hit = run.iterations.filter(function (i) { return ITERS[i].n === n; })[0];
      if (hit !== undefined) showIteration(hit);
    });
    return box;
  }

  function otherMatches() {
    var box = el("div", "other-matches");
    box.appendChild(el("span", null, "Matches in: "));
    RUNS.forEach(function (r) {
      if (!state.runMatches[r.id]) return;
      var link = el("button", "link", r.label + (r.model ? " · " + r.model : "") + " (" + state.runMatches[r.id] + ")");
      link.type = "button";
      link.addEventListener("click", function () { selectRun(r.id); });
      box.appendChild(link);
    });
    return box;
  }

  function addPage() {
    var timeline = $("timeline");
    if (!timeline) return;
    var end = Math.min(state.list.length, state.shown + PAGE);
    var frag = document.createDocumentFragment();
    for (var k = state.shown; k < end; k++) frag.appendChild(card(state.list[k]));
    timeline.appendChild(frag);
    state.shown = end;
    var more = $("show-more");
    var left = state.list.length - state.shown;
    more.hidden = left <= 0;
    more.textContent = "Show " + Math.min(PAGE, left) + " more (" + fmtInt(left) + " not shown yet)";
  }

  function showIteration(index) {
    var pos = state.list.indexOf(index);
    if (pos === -1) return;
    while (state.shown <= pos) addPage();
    var c = cards[index];
    setOpen(c, index, true);
    c.scrollIntoView({ block: "start" });
    c.classList.add("flash");
    setTimeout(function () { c.classList.remove("flash"); }, 1200);
  }

  // -- iteration cards ----------------------------------------------------------------

  function card(index) {
    var it = ITERS[index];
    var calls = 0, children = 0;
    it.blocks.forEach(function (b) {
      calls += b.calls.length;
      b.calls.forEach(function (c) { if (c.run !== null) children++; });
    });
    var art = el("article", "iter" + (it.error ? " has-error" : "") + (it.final !== null ? " is-final" : ""));
    art.dataset.index = index;
    art.dataset.n = it.n;
    var head = el("header", "iter-head");
    head.setAttribute("role", "button");
    head.tabIndex = 0;
    var badges = el("span", "badges");
    add(badges,
      it.blocks.length ? badge(plural(it.blocks.length, "code block"), "count") : null,
      calls ? badge(plural(calls, "sub-call"), "count") : null,
      children ? badge(plural(children, "child RLM"), "child") : null,
      usageBadge(it.usage),
      it.time !== null ? badge(fmtTime(it.time), "time", "iteration time") : null,
      it.error ? badge("error", "err") : null,
      it.final !== null ? badge("final", "ok") : null);
    add(head, el("span", "twisty", "▾"), el("span", "iter-n", "#" + it.n),
      el("span", "preview", firstLine(it.response, 140)), badges);
    var body = el("div", "iter-body");
    add(art, head, body);
    function toggle() {
      var open = !art.classList.contains("open");
      state.toggled[index] = open;
      setOpen(art, index, open);
    }
    head.addEventListener("click", toggle);
    head.addEventListener("keydown", function (e) {
      if (e.key === "Enter" || e.key === " ") { e.preventDefault(); toggle(); }
    });
    cards[index] = art;
    var open = index in state.toggled ? state.toggled[index] : state.autoOpen;
    setOpen(art, index, open, true);
    observer.observe(art);
    return art;
  }

  function setOpen(art, index, open, initial) {
    art.classList.toggle("open", open);
    art.querySelector(".twisty").textContent = open ? "▾" : "▸";
    art.querySelector(".iter-head").setAttribute("aria-expanded", String(open));
    if (open && !initial && !art.dataset.rendered) renderBody(art, index);
  }

  function onVisible(entries) {
    entries.forEach(function (e) {
      var art = e.target;
      if (!e.isIntersecting || art.dataset.rendered) return;
      if (art.classList.contains("open")) renderBody(art, +art.dataset.index);
    });
  }

  function renderBody(art, index) {
    var it = ITERS[index];
    var body = art.querySelector(".iter-body");
    art.dataset.rendered = "1";
    observer.unobserve(art);
    body.classList.add("rendered");
    if (it.prompt.length) body.appendChild(promptSection(it));
    add(body, el("h4", null, "Model reply"), textBlock(it.response, "reply", CLIP, it.blocks));
    it.blocks.forEach(function (b, k) { body.appendChild(blockSection(b, k)); });
    if (it.final !== null) {
      var fin = el("div", "final-answer");
      add(fin, el("h4", null, "Final answer"), textBlock(it.final, "answer-text"));
      body.appendChild(fin);
    }
  }

  function promptSection(it) {
    var details = el("details", "prompt");
    var label = "Prompt: " + plural(it.prompt.length, it.prompt_skipped ? "new message" : "message");
    if (it.prompt_skipped) label += " (" + it.prompt_skipped + " earlier not repeated)";
    details.appendChild(el("summary", null, label));
    details.addEventListener("toggle", function fill() {
      details.removeEventListener("toggle", fill);
      it.prompt.forEach(function (m) {
        var msg = el("div", "msg");
        add(msg, el("span", "role role-" + m.role, m.role), textBlock(m.content, "msg-text", 600));
        details.appendChild(msg);
      });
    });
    return details;
  }

  function blockSection(b, k) {
    var sec = el("section", "block" + (b.stderr.trim() ? " has-error" : ""));
    var head = el("div", "block-head");
    add(head, el("h4", null, "Code block " + (k + 1)), b.time !== null ? badge(fmtTime(b.time), "time") : null);
    add(sec, head, textBlock(b.code, "code"));
    if (b.stdout) add(sec, el("h5", null, "stdout"), textBlock(b.stdout, "stdout"));
    if (b.stderr) add(sec, el("h5", "err", "stderr"), textBlock(b.stderr, "stderr"));
    if (b.calls.length) {
      var calls = el("div", "calls");
      calls.appendChild(el("h5", null, "Sub-calls (" + b.calls.length + ")"));
      b.calls.forEach(function (c) { calls.appendChild(callView(c)); });
      sec.appendChild(calls);
    }
    if (b.final !== null) add(sec, el("h5", "ok", "answer submitted"), textBlock(b.final, "answer-text"));
    var names = Object.keys(b.locals);
    if (names.length) {
      var vars = el("details", "locals");
      vars.appendChild(el("summary", null, "Variables (" + names.length + ")"));
      var table = el("table");
      names.forEach(function (n) { add(table, add(el("tr"), el("th", null, n), el("td", null, b.locals[n]))); });
      vars.appendChild(table);
      sec.appendChild(vars);
    }
    return sec;
  }

  function callView(c) {
    var box = el("div", "call" + (c.error ? " has-error" : "") + (c.run !== null ? " is-child" : ""));
    var head = el("div", "call-head");
    add(head, badge(c.run !== null ? "child RLM" : "sub-call", c.run !== null ? "child" : "count"),
      el("span", "node-model", c.model), usageBadge(c.usage),
      c.time !== null ? badge(fmtTime(c.time), "time") : null);
    if (c.run !== null) {
      var open = el("button", "link open-child", "open child run ›");
      open.type = "button";
      open.addEventListener("click", function () { selectRun(c.run); });
      head.appendChild(open);
    }
    box.appendChild(head);
    var prompt = el("details", "call-prompt");
    prompt.appendChild(el("summary", null, "prompt: " + firstLine(c.prompt, 90)));
    prompt.appendChild(textBlock(c.prompt, "msg-text", 600));
    add(box, prompt, textBlock(c.response, c.error ? "stderr" : "response", 600));
    if (c.error && c.error !== c.response) box.appendChild(textBlock(c.error, "stderr"));
    return box;
  }

  // -- search ---------------------------------------------------------------------------

  function buildHay() {
    hay = ITERS.map(function (it) {
      var parts = [it.response, it.final || ""];
      it.blocks.forEach(function (b) {
        parts.push(b.code, b.stdout, b.stderr, b.final || "");
        b.calls.forEach(function (c) { parts.push(c.prompt, c.response, c.error || ""); });
      });
      return parts.join("\n").toLowerCase();
    });
  }

  function search(raw) {
    var q = raw.trim().toLowerCase();
    if (q === state.query) return;
    state.query = q;
    var counter = $("match-count");
    if (!q) {
      state.matches = state.runMatches = null;
      counter.textContent = "";
      counter.dataset.count = "";
    } else {
      if (!hay) buildHay();
      state.matches = new Uint8Array(ITERS.length);
      state.runMatches = RUNS.map(function () { return 0; });
      var total = 0;
      for (var i = 0; i < ITERS.length; i++) {
        if (hay[i].indexOf(q) !== -1) { state.matches[i] = 1; state.runMatches[ITERS[i].run]++; total++; }
      }
      var runsHit = state.runMatches.filter(function (n) { return n; }).length;
      counter.textContent = plural(total, "matching iteration") + (RUNS.length > 1 ? " in " + plural(runsHit, "run") : "");
      counter.dataset.count = String(total);
      counter.className = total ? "" : "none";
    }
    Object.keys(treeRows).forEach(function (id) { updateTreeBadge(+id); });
    renderDetail();
  }

  function wireSearch() {
    var box = $("search"), timer = null;
    box.addEventListener("input", function () {
      clearTimeout(timer);
      timer = setTimeout(function () { search(box.value); }, ITERS.length > 500 ? 150 : 40);
    });
    box.addEventListener("keydown", function (e) {
      if (e.key === "Enter") { clearTimeout(timer); search(box.value); }
      if (e.key === "Escape") { box.value = ""; search(""); }
    });
    document.addEventListener("keydown", function (e) {
      if (e.key === "/" && document.activeElement !== box) { e.preventDefault(); box.focus(); }
    });
  }

  // -- start ------------------------------------------------------------------------------

  renderHeader();
  renderTree();
  wireSearch();
  selectRun(DATA.roots.length ? DATA.roots[0] : null);
  document.body.dataset.ready = "1";
})();
