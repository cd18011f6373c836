/* rlmx trajectory viewer: the page (header story, run tree, run detail, paging, search).
 * Vanilla JS, no network, no dependencies; markdown.js, chart.js, dom.js and cards.js
 * come first in the same inline script.
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

  // -- helpers (dom.js); text blocks highlight the current search -------------------

  var D = rlmDom;
  var el = D.el, $ = D.byId, plural = D.plural, fmtInt = D.fmtInt, fmtTime = D.fmtTime;
  var firstLine = D.firstLine, usageBadge = D.usageBadge, badge = D.badge, add = D.add;
  function textBlock(text, cls, clip) { return D.textBlock(text, cls, clip, state.query); }
  function mdBlock(text, cls, blocks) { return D.mdBlock(text, cls, blocks, state.query); }

  function ownIterations(run) {
    return run.iterations.filter(function (i) { return !ITERS[i].final_call; }).length;
  }
  function hasFinalCall(run) {
    return run.iterations.some(function (i) { return ITERS[i].final_call; });
  }
  var OUTCOMES = {
    answer: ["answered", "ok"],
    max_iterations: ["answered by the final answer call", "warn"],
    limit: ["stopped by a limit", "err"],
    cancelled: ["cancelled", "err"],
    error: ["failed", "err"],
  };
  function outcomeBadge(outcome, limit) {
    if (!outcome) return null;
    var known = Object.prototype.hasOwnProperty.call(OUTCOMES, outcome) ? OUTCOMES[outcome] : [String(outcome), ""];
    return badge(known[0] + (outcome === "limit" && limit ? ": " + limit : ""), "outcome " + known[1], "outcome of the run");
  }

  // -- header ------------------------------------------------------------------------

  function renderHeader() {
    var s = DATA.summary;
    $("title").textContent = DATA.title;
    var box = $("summary");
    var story = el("div", "story");
    if (s.question) {
      var q = el("div", "story-part question");
      add(q, el("span", "story-label", "Question"), textBlock(s.question, "question-text", 600));
      story.appendChild(q);
    }
    if (s.answer !== null && s.answer !== undefined) {
      var answer = el("div", "story-part answer");
      add(answer, el("span", "story-label", "Answer"), mdBlock(s.answer, "answer-text"));
      story.appendChild(answer);
    }
    if (s.error) {
      var failed = el("div", "story-part run-error");
      add(failed, el("span", "story-label", "Error"), textBlock(s.error, "stderr", 600));
      story.appendChild(failed);
    }
    if (story.childNodes.length) box.appendChild(story);
    var stats = el("div", "stats");
    add(stats,
      outcomeBadge(s.outcome, null),
      stat(s.iterations, "iterations"),
      s.final_call ? el("span", "stat final-call", "+ final answer call") : null,
      s.child_runs ? stat(s.child_runs, "child runs") : null,
      stat(s.subcalls, "sub-calls"),
      s.errors ? stat(s.errors, "with errors", "err") : null,
      s.execution_time !== null ? stat(fmtTime(s.execution_time), "elapsed") : null);
    var total = usageBadge(s.usage, s.usage_reported ? "total:" : "logged:");
    if (total) {
      if (!s.usage_reported) total.title += " (summed from what the log recorded; it has no run total)";
      stats.appendChild(total);
    }
    var chips = el("div", "chips");
    add(chips, s.model ? badge(s.model, "model", "root model") : null);
    Object.keys(s.meta).forEach(function (k) {
      var v = s.meta[k];
      chips.appendChild(badge(k.replace(/_/g, " ") + ": " + (typeof v === "object" ? JSON.stringify(v) : v), "meta"));
    });
    if (s.context) chips.appendChild(badge("context: " + s.context, "meta", "the run's context (summary)"));
    if (s.started) chips.appendChild(badge(s.started.replace("T", " ").slice(0, 19), "meta", "started"));
    add(box, stats, chips);
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
      run.prompt || run.question ? el("span", "node-prompt", firstLine(run.prompt || run.question, 48)) : null);
    var meta = el("div", "node-meta");
    add(meta, badge(plural(ownIterations(run), "iteration") + (hasFinalCall(run) ? " + final call" : ""), "count"),
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
    var out = run.outcome;
    add(stats, out ? outcomeBadge(out.outcome, out.limit) : null,
      stat(ownIterations(run), "iterations"),
      hasFinalCall(run) ? el("span", "stat final-call", "+ final answer call") : null,
      run.children.length ? stat(run.children.length, "child runs") : null,
      out && out.time !== null ? stat(fmtTime(out.time), "elapsed") : null);
    var total = usageBadge(run.usage, run.usage_reported ? "total:" : "logged:");
    if (total) stats.appendChild(total);
    head.appendChild(stats);
    if (run.usage.models && Object.keys(run.usage.models).length > 1) {
      var models = el("div", "models");
      Object.keys(run.usage.models).forEach(function (m) {
        add(models, el("span", "model-name", m), usageBadge(run.usage.models[m]));
      });
      head.appendChild(models);
    }
    if (run.prompt) add(head, el("h4", null, "Task from the parent (sub-call prompt)"), textBlock(run.prompt, "prompt", 400));
    else if (run.question && run.id !== DATA.roots[0]) add(head, el("h4", null, "Question"), textBlock(run.question, "question-text", 400));
    if (run.context) head.appendChild(el("div", "context-line", "Context: " + run.context));
    if (run.response !== null && run.id !== DATA.roots[0]) {
      add(head, el("h4", null, run.error ? "Response (error)" : "Answer"),
        run.error ? textBlock(run.response, "stderr", 400) : mdBlock(run.response, "answer-text"));
    }
    if (out && out.error && run.id !== DATA.roots[0]) head.appendChild(textBlock(out.error, "stderr", 400));
    if (run.iterations.length) {
      var its = run.iterations.map(function (i) { return ITERS[i]; });
      head.appendChild(rlmChart.timeline(its, { time: fmtTime, int: fmtInt }, function (k) {
        showIteration(run.iterations[k]);
      }));
    }
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
      : plural(ownIterations(run), "iteration") + (hasFinalCall(run) ? " + final answer call" : "");
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
    more.textContent = left > 0 ? "Show " + Math.min(PAGE, left) + " more (" + fmtInt(left) + " not shown yet)" : "";
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

  // -- iteration cards (cards.js) --------------------------------------------------------

  var C = rlmCards({
    iters: ITERS,
    state: state,
    observer: function () { return observer; },
    register: function (index, art) { cards[index] = art; },
    selectRun: function (id) { selectRun(id); },
    textBlock: textBlock,
    mdBlock: mdBlock,
  });
  var card = C.card, setOpen = C.setOpen, onVisible = C.onVisible;

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
