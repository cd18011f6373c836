/* rlmx viewer: one iteration's card (global rlmCards, used by viewer.js).
 *
 * A card's header says what the iteration did (its title, counts, usage, time); its
 * body (prompt delta, reply as Markdown, code blocks with output, sub-calls, variables,
 * final answer) is built only when the card is open and near the viewport.
 *
 * rlmCards(ctx) -> {card, setOpen, onVisible}; ctx = {iters, state (toggled, autoOpen),
 * observer() (the current IntersectionObserver), register(index, card element),
 * selectRun(id), textBlock(text, cls, clip), mdBlock(text, cls, blocks)}.
 */
var rlmCards = function (ctx) {
  "use strict";

  var D = rlmDom;
  var el = D.el, plural = D.plural, fmtTime = D.fmtTime, firstLine = D.firstLine;
  var usageBadge = D.usageBadge, badge = D.badge, add = D.add;
  var textBlock = ctx.textBlock, mdBlock = ctx.mdBlock, iters = ctx.iters;
  var FINAL_CALL_NOTE = "The run used all its iterations; this extra call asked the model to " +
    "answer now. It is not counted as an iteration.";

  function card(index) {
    var it = iters[index];
    var calls = 0, children = 0;
    it.blocks.forEach(function (b) {
      calls += b.calls.length;
      b.calls.forEach(function (c) { if (c.run !== null) children++; });
    });
    var art = el("article", "iter" + (it.error ? " has-error" : "") + (it.final !== null ? " is-final" : "") +
      (it.final_call ? " is-final-call" : ""));
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
      it.cached ? badge("cached", "cached", "the reply came from the call cache") : null,
      usageBadge(it.usage),
      it.time !== null ? badge(fmtTime(it.time), "time", "iteration time")
        : it.timing.model !== null ? badge(fmtTime(it.timing.model), "time", "model time") : null,
      it.error ? badge("error", "err") : null,
      it.final !== null ? badge("final", "ok") : null);
    var title = el("span", "preview title-" + it.title_kind, it.title);
    title.title = it.title;
    add(head, el("span", "twisty", "▾"), el("span", "iter-n", it.final_call ? "final" : "#" + it.n), title, badges);
    var body = el("div", "iter-body");
    add(art, head, body);
    function toggle() {
      var open = !art.classList.contains("open");
      ctx.state.toggled[index] = open;
      setOpen(art, index, open);
    }
    head.addEventListener("click", toggle);
    head.addEventListener("keydown", function (e) {
      if (e.key === "Enter" || e.key === " ") { e.preventDefault(); toggle(); }
    });
    ctx.register(index, art);
    var open = index in ctx.state.toggled ? ctx.state.toggled[index] : ctx.state.autoOpen;
    setOpen(art, index, open, true);
    ctx.observer().observe(art);
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
    var it = iters[index];
    var body = art.querySelector(".iter-body");
    art.dataset.rendered = "1";
    ctx.observer().unobserve(art);
    body.classList.add("rendered");
    if (it.prompt.length) body.appendChild(promptSection(it));
    if (it.final_call) body.appendChild(el("p", "final-call-note", FINAL_CALL_NOTE));
    add(body, el("h4", null, "Model reply"), mdBlock(it.response, "reply", it.blocks));
    it.blocks.forEach(function (b, k) { body.appendChild(blockSection(b, k)); });
    if (it.final !== null) {
      var fin = el("div", "final-answer");
      add(fin, el("h4", null, "Final answer"), mdBlock(it.final, "answer-text"));
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
    if (b.final !== null) add(sec, el("h5", "ok", "answer submitted"), mdBlock(b.final, "answer-text"));
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
      el("span", "node-model", c.model),
      c.usage && c.usage.cached ? badge("cached", "cached", "answered by the call cache") : null,
      usageBadge(c.usage),
      c.time !== null ? badge(fmtTime(c.time), "time") : null);
    if (c.run !== null) {
      var open = el("button", "link open-child", "open child run ›");
      open.type = "button";
      open.addEventListener("click", function () { ctx.selectRun(c.run); });
      head.appendChild(open);
    }
    box.appendChild(head);
    var prompt = el("details", "call-prompt");
    prompt.appendChild(el("summary", null, "prompt: " + firstLine(c.prompt, 90)));
    prompt.appendChild(textBlock(c.prompt, "msg-text", 600));
    add(box, prompt, c.error ? textBlock(c.response, "stderr", 600) : mdBlock(c.response, "response"));
    if (c.error && c.error !== c.response) box.appendChild(textBlock(c.error, "stderr"));
    return box;
  }

  return { card: card, setOpen: setOpen, onVisible: onVisible };
};
