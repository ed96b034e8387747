// sluice console: what must be live. Every page works without this file.
(function () {
  "use strict";

  // Times: the HTML says UTC; show the reader's local time, keeping UTC.
  function localize(root) {
    root.querySelectorAll("time[datetime]").forEach(function (t) {
      var d = new Date(t.getAttribute("datetime"));
      if (isNaN(d)) return;
      var utc = t.getAttribute("data-utc") || t.textContent;
      t.setAttribute("data-utc", utc);
      t.title = utc;
      var opts = { hour: "2-digit", minute: "2-digit" };
      var today = new Date();
      if (d.toDateString() !== today.toDateString()) {
        opts.month = "short"; opts.day = "numeric";
      }
      var local = d.toLocaleString(undefined, opts);
      t.textContent = d.getTimezoneOffset() === 0 ? utc : local + " (" + utc.replace(/^\d{4}-\d\d-\d\d /, "") + ")";
    });
  }

  function utcText(d) {
    function p(n) { return (n < 10 ? "0" : "") + n; }
    return d.getUTCFullYear() + "-" + p(d.getUTCMonth() + 1) + "-" + p(d.getUTCDate()) + " " +
      p(d.getUTCHours()) + ":" + p(d.getUTCMinutes()) + " UTC";
  }

  // Gauges: poll the console's usage endpoint and update the figures.
  function live(box) {
    var url = box.getAttribute("data-usage-url");
    function set(card, name, value) {
      var el = card.querySelector('[data-f="' + name + '"]');
      if (el) el.textContent = Number(value).toLocaleString("en-US");
      return el;
    }
    function update(u) {
      box.querySelectorAll("[data-window]").forEach(function (card) {
        var w = u[card.getAttribute("data-window")];
        if (!w) return;
        set(card, "used", w.used);
        if (w.limit === null) return;
        set(card, "limit", w.limit);
        set(card, "remaining", w.remaining);
        var bar = card.querySelector('[data-f="bar"]');
        if (bar) {
          bar.setAttribute("width", w.percent);
          bar.setAttribute("class", "gauge-fill " + (w.used >= w.limit ? "full" : w.used * 100 >= w.limit * 80 ? "warn" : "ok"));
        }
        var g = card.querySelector('[data-f="gauge"]');
        if (g) g.setAttribute("aria-label", w.percent + " percent of the " + card.getAttribute("data-window") + " limit used");
        var wrap = card.querySelector('[data-f="resetwrap"]');
        if (wrap) wrap.hidden = w.used === 0;
        var t = card.querySelector('[data-f="reset"]');
        if (t && w.reset) {
          var d = new Date(w.reset * 1000);
          t.setAttribute("datetime", d.toISOString());
          t.setAttribute("data-utc", utcText(d));
          localize(card);
        }
      });
      box.setAttribute("data-updated", String(Date.now()));
    }
    function poll() {
      if (document.hidden) return;
      fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
        .then(function (r) { return r.ok ? r.json() : null; })
        .then(function (u) { if (u) update(u); })
        .catch(function () {});
    }
    setInterval(poll, 5000);
    document.addEventListener("visibilitychange", poll);
  }

  // Copy buttons: hidden without JavaScript, since they need it.
  function copy(btn) {
    btn.hidden = false;
    btn.addEventListener("click", function () {
      var el = document.getElementById(btn.getAttribute("data-copy"));
      var text = el.textContent;
      var done = function () { btn.textContent = "Copied"; setTimeout(function () { btn.textContent = "Copy"; }, 2000); };
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(text).then(done, function () { select(el); });
      } else {
        select(el);
      }
    });
  }
  function select(el) {
    var r = document.createRange();
    r.selectNodeContents(el);
    var s = window.getSelection();
    s.removeAllRanges();
    s.addRange(r);
  }

  document.addEventListener("DOMContentLoaded", function () {
    localize(document);
    document.querySelectorAll("[data-usage-url]").forEach(live);
    document.querySelectorAll("[data-copy]").forEach(copy);
  });
})();
