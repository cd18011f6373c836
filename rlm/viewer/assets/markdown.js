/* rlmx viewer: a small Markdown renderer for model replies and answers.
 *
 * It builds DOM nodes (createElement + text nodes) and never parses HTML, so any text
 * stays text. Blocks: fenced code (``` or ~~~, any length; a fence closes only on a
 * run of the same character at least as long, so fences nest the CommonMark way),
 * headings, block quotes, lists (nested by indentation), tables, rules, paragraphs
 * (line breaks kept). Inline: code spans, **bold**, *italic*, [links](url) shown as
 * text with their target (nothing on the page navigates or loads).
 *
 * rlmMarkdown.render(parent, text, opts): opts.put(parent, text) appends plain text
 * (the viewer uses it to highlight search hits); opts.fence(info, body) may return a
 * node to show instead of a code block (the viewer points at executed blocks).
 */
var rlmMarkdown = (function () {
  "use strict";

  var MAX_DEPTH = 6;
  var FENCE = /^( {0,3})(`{3,}|~{3,})(.*)$/;
  var HEADING = /^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$/;
  var RULE = /^ {0,3}([-*_])(?:[ \t]*\1){2,}[ \t]*$/;
  var QUOTE = /^ {0,3}> ?(.*)$/;
  var ITEM = /^( *)([-*+]|\d{1,9}[.)])(?:[ \t]+(.*))?$/;
  var TABLE_RULE = /^ *\|? *:?-+:? *(\| *:?-+:? *)*\|? *$/;

  function node(tag, cls) {
    var n = document.createElement(tag);
    if (cls) n.className = cls;
    return n;
  }
  function plainPut(parent, text) { parent.appendChild(document.createTextNode(text)); }

  function isFenceOpen(line) {
    var m = FENCE.exec(line);
    if (!m || (m[2][0] === "`" && m[3].indexOf("`") !== -1)) return null;
    return { indent: m[1].length, mark: m[2], info: m[3].trim() };
  }
  function closesFence(line, open) {
    var m = /^ {0,3}(`{3,}|~{3,})[ \t]*$/.exec(line);
    return !!m && m[1][0] === open.mark[0] && m[1].length >= open.mark.length;
  }
  function startsBlock(line) {
    return !!(isFenceOpen(line) || HEADING.test(line) || RULE.test(line) || QUOTE.test(line) || ITEM.test(line));
  }
  function splitRow(line) {
    var cells = line.trim().replace(/^\|/, "").replace(/\|$/, "").split("|");
    return cells.map(function (c) { return c.trim(); });
  }

  function renderBlocks(parent, lines, opts, depth) {
    var i = 0;
    while (i < lines.length) {
      var line = lines[i];
      if (!line.trim()) { i++; continue; }
      var open = isFenceOpen(line);
      if (open) {
        var body = [];
        i++;
        while (i < lines.length && !closesFence(lines[i], open)) {
          var l = lines[i];
          for (var k = 0; k < open.indent && l[0] === " "; k++) l = l.slice(1);
          body.push(l);
          i++;
        }
        var closed = i < lines.length;
        i++; // the closing fence (or the end: an unclosed fence runs to the end)
        var text = body.join("\n");
        if (!text.trim()) {
          // An empty block would be an empty bar: a stray unclosed fence shows as text.
          var stray = node("p", "md-p md-empty");
          opts.put(stray, closed ? "(empty code block)" : line.trim());
          parent.appendChild(stray);
          continue;
        }
        var swap = opts.fence ? opts.fence(open.info, text) : null;
        parent.appendChild(swap || codeBlock(open.info, text, opts));
        continue;
      }
      var h = HEADING.exec(line);
      if (h) {
        var head = node("h" + Math.min(h[1].length + 2, 6), "md-h");
        inline(head, h[2] || "", opts, 0);
        parent.appendChild(head);
        i++;
        continue;
      }
      if (RULE.test(line)) { parent.appendChild(node("hr", "md-rule")); i++; continue; }
      if (QUOTE.test(line)) {
        var quoted = [];
        while (i < lines.length && lines[i].trim() && QUOTE.test(lines[i])) quoted.push(QUOTE.exec(lines[i++])[1]);
        var q = node("blockquote", "md-quote");
        if (depth < MAX_DEPTH) renderBlocks(q, quoted, opts, depth + 1); else opts.put(q, quoted.join("\n"));
        parent.appendChild(q);
        continue;
      }
      var item = ITEM.exec(line);
      if (item) { i = list(parent, lines, i, opts, depth); continue; }
      if (line.indexOf("|") !== -1 && i + 1 < lines.length && TABLE_RULE.test(lines[i + 1]) && lines[i + 1].indexOf("-") !== -1) {
        i = table(parent, lines, i, opts);
        continue;
      }
      var para = [line];
      i++;
      while (i < lines.length && lines[i].trim() && !startsBlock(lines[i])) para.push(lines[i++]);
      var p = node("p", "md-p");
      inline(p, para.join("\n"), opts, 0);
      parent.appendChild(p);
    }
  }

  function codeBlock(info, body, opts) {
    var pre = node("pre", "md-code");
    if (info) {
      var tag = node("span", "md-lang");
      tag.textContent = info.split(/\s/)[0];
      pre.appendChild(tag);
    }
    var code = node("code");
    opts.put(code, body);
    pre.appendChild(code);
    return pre;
  }

  function list(parent, lines, i, opts, depth) {
    var first = ITEM.exec(lines[i]);
    var indent = first[1].length;
    var ordered = /\d/.test(first[2]);
    var box = node(ordered ? "ol" : "ul", "md-list");
    if (ordered && parseInt(first[2], 10) !== 1) box.start = parseInt(first[2], 10);
    while (i < lines.length) {
      var m = ITEM.exec(lines[i]);
      if (!m || m[1].length !== indent || /\d/.test(m[2]) !== ordered) break;
      var body = [m[3] || ""];
      var pad = indent + m[2].length + 1;
      i++;
      while (i < lines.length) {
        var l = lines[i];
        if (!l.trim()) {
          var next = lines[i + 1];
          if (next === undefined || next.search(/\S/) <= indent) break;
          body.push("");
          i++;
          continue;
        }
        var lead = l.search(/\S/);
        if (lead <= indent && (ITEM.test(l) || startsBlock(l))) break;
        body.push(l.slice(Math.min(lead, pad)));
        i++;
      }
      var li = node("li");
      if (depth < MAX_DEPTH) renderBlocks(li, body, opts, depth + 1); else opts.put(li, body.join("\n"));
      box.appendChild(li);
    }
    parent.appendChild(box);
    return i;
  }

  function table(parent, lines, i, opts) {
    var t = node("table", "md-table");
    var tr = node("tr");
    splitRow(lines[i]).forEach(function (c) { var th = node("th"); inline(th, c, opts, 0); tr.appendChild(th); });
    t.appendChild(tr);
    i += 2;
    while (i < lines.length && lines[i].trim() && lines[i].indexOf("|") !== -1) {
      var row = node("tr");
      splitRow(lines[i++]).forEach(function (c) { var td = node("td"); inline(td, c, opts, 0); row.appendChild(td); });
      t.appendChild(row);
    }
    var wrap = node("div", "md-table-wrap");
    wrap.appendChild(t);
    parent.appendChild(wrap);
    return i;
  }

  // Inline: code spans first (their content is literal), then emphasis and links.
  var EMPHASIS = /\*\*(?=\S)([\s\S]*?\S)\*\*|(?<!\w)__(?=\S)([\s\S]*?\S)__(?!\w)|\*(?=[^\s*])([^*\n]*?[^\s*])\*|(?<![\w])_(?=[^\s_])([^_\n]*?[^\s_])_(?![\w])|\[([^\]\n]+)\]\(((?:[^()\s]|\([^()\s]*\))+)\)/g;

  function inline(parent, text, opts, depth) {
    var at = 0;
    var tick = /(`+)/g, m;
    while ((m = tick.exec(text)) !== null) {
      var run = m[1];
      var close = text.indexOf(run, m.index + run.length);
      while (close !== -1 && (text[close + run.length] === "`" || text[close - 1] === "`")) {
        close = text.indexOf(run, close + 1);
      }
      if (close === -1) continue;
      emphasis(parent, text.slice(at, m.index), opts, depth);
      var code = node("code", "md-inline");
      opts.put(code, text.slice(m.index + run.length, close).replace(/^ (.*) $/, "$1"));
      parent.appendChild(code);
      at = close + run.length;
      tick.lastIndex = at;
    }
    emphasis(parent, text.slice(at), opts, depth);
  }

  function emphasis(parent, text, opts, depth) {
    if (!text) return;
    if (depth >= MAX_DEPTH) { opts.put(parent, text); return; }
    var at = 0, m;
    var re = new RegExp(EMPHASIS.source, "g"); // a fresh one: this function recurses
    while ((m = re.exec(text)) !== null) {
      if (m.index > at) opts.put(parent, text.slice(at, m.index));
      if (m[5] !== undefined) {
        var label = node("span", "md-link");
        emphasis(label, m[5], opts, depth + 1);
        var target = node("span", "md-url");
        opts.put(target, " (" + m[6] + ")");
        parent.appendChild(label);
        parent.appendChild(target);
      } else {
        var strong = m[1] !== undefined || m[2] !== undefined;
        var wrap = node(strong ? "strong" : "em");
        emphasis(wrap, m[1] || m[2] || m[3] || m[4], opts, depth + 1);
        parent.appendChild(wrap);
      }
      at = m.index + m[0].length;
    }
    if (at < text.length) opts.put(parent, text.slice(at));
  }

  function render(parent, text, opts) {
    opts = opts || {};
    if (!opts.put) opts.put = plainPut;
    renderBlocks(parent, String(text || "").replace(/\r\n?/g, "\n").split("\n"), opts, 0);
    return parent;
  }

  return { render: render };
})();
