/* rlmx viewer: DOM and text helpers shared by the page script (global rlmDom).
 *
 * Everything here builds elements and assigns text (textContent, text nodes): logged
 * text is untrusted and is never parsed as markup. Long text is clipped at both ends
 * behind a "show all" toggle; Markdown goes through rlmMarkdown (markdown.js).
 */
var rlmDom = (function () {
  "use strict";

  var CLIP = 1200;  // characters kept at each end of a long text
  var MD_MAX = 60000; // longer Markdown is shown as plain (clipped) text

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

  /* A <pre> holding `text`; past 2*CLIP characters only both ends are shown, with an
   * explicit "… N characters hidden — show all" toggle in between. `query` (lower-case)
   * is highlighted. */
  function textBlock(text, cls, clip, query) {
    var pre = el("pre", "text " + (cls || ""));
    clip = clip || CLIP;
    text = text || "";
    function clipped() {
      pre.textContent = "";
      var hidden = text.length - 2 * clip;
      appendMarked(pre, text.slice(0, clip), query);
      var middle = text.slice(clip, text.length - clip);
      var label = "… " + hidden.toLocaleString("en-US") + " characters hidden — show all";
      if (query && middle.toLowerCase().indexOf(query) !== -1) label += " (has matches)";
      var more = el("button", "more", label);
      more.type = "button";
      more.addEventListener("click", full);
      pre.appendChild(more);
      appendMarked(pre, text.slice(text.length - clip), query);
    }
    function full() {
      pre.textContent = "";
      appendMarked(pre, text, query);
      var less = el("button", "more", "show less");
      less.type = "button";
      less.addEventListener("click", clipped);
      pre.appendChild(less);
    }
    if (text.length > 2 * clip + 200) clipped();
    else appendMarked(pre, text, query);
    return pre;
  }

  /* Markdown (replies, answers). A fence whose code is one of the iteration's executed
   * blocks becomes a pointer to it, so the code is not shown twice. */
  function mdBlock(text, cls, blocks, query) {
    text = text || "";
    if (text.length > MD_MAX) return textBlock(text, cls, 0, query);
    var box = el("div", "md " + (cls || ""));
    var codes = (blocks || []).map(function (b) { return b.code.trim(); });
    rlmMarkdown.render(box, text, {
      put: function (parent, t) { appendMarked(parent, t, query); },
      fence: function (info, body) {
        var ran = codes.indexOf(body.trim());
        return ran === -1 ? null : el("div", "fence-ref", "⤷ code block " + (ran + 1) + " (below)");
      },
    });
    return box;
  }

  return {
    el: el, byId: $, plural: plural, fmtInt: fmtInt, fmtCost: fmtCost, fmtTime: fmtTime,
    firstLine: firstLine, usageBadge: usageBadge, badge: badge, add: add,
    appendMarked: appendMarked, textBlock: textBlock, mdBlock: mdBlock, CLIP: CLIP,
  };
})();
