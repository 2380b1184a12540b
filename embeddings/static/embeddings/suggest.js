// Type-ahead for the header search box: suggestions from GET /api/v1/search/suggest/ as the
// shopper types (debounced), shown as an ARIA 1.2 combobox + listbox. Arrow keys move through
// them, Enter or a click searches the chosen one, Escape closes the list. Without JavaScript the
// box is a plain search box.
(function () {
  "use strict";
  var script = document.currentScript;
  var url = script && script.dataset.suggestUrl;
  var input = document.getElementById("header-q");
  if (!url || !input || !input.form || !window.fetch) return;

  var DEBOUNCE_MS = 150;
  var form = input.form;
  var list = document.createElement("ul");
  list.id = "header-q-suggestions";
  list.className = "suggestions";
  list.setAttribute("role", "listbox");
  list.setAttribute("aria-label", "Suggestions");
  list.hidden = true;
  form.classList.add("has-suggestions");
  input.insertAdjacentElement("afterend", list);
  input.setAttribute("role", "combobox");
  input.setAttribute("aria-autocomplete", "list");
  input.setAttribute("aria-controls", list.id);
  input.setAttribute("aria-expanded", "false");

  var KIND_LABEL = { query: "popular search", category: "category", title: "product" };
  var items = [];
  var active = -1;
  var timer = null;
  var pending = null;
  var lastAsked = null;

  function close() {
    list.hidden = true;
    list.innerHTML = "";
    items = [];
    active = -1;
    input.setAttribute("aria-expanded", "false");
    input.removeAttribute("aria-activedescendant");
  }

  function setActive(index) {
    if (active >= 0 && list.children[active]) list.children[active].setAttribute("aria-selected", "false");
    active = index;
    if (active >= 0) {
      var option = list.children[active];
      option.setAttribute("aria-selected", "true");
      input.setAttribute("aria-activedescendant", option.id);
      option.scrollIntoView({ block: "nearest" });
    } else {
      input.removeAttribute("aria-activedescendant");
    }
  }

  function choose(index) {
    input.value = items[index].text;
    close();
    if (form.requestSubmit) form.requestSubmit();
    else form.submit();
  }

  function show(suggestions) {
    close();
    items = suggestions;
    if (!items.length) return;
    items.forEach(function (s, i) {
      var option = document.createElement("li");
      option.id = list.id + "-" + i;
      option.setAttribute("role", "option");
      option.setAttribute("aria-selected", "false");
      option.dataset.kind = s.kind;
      var text = document.createElement("span");
      text.className = "suggestion-text";
      text.textContent = s.text;
      var kind = document.createElement("span");
      kind.className = "suggestion-kind";
      kind.textContent = KIND_LABEL[s.kind] || s.kind;
      option.append(text, kind);
      // mousedown, not click: the input keeps focus, so blur does not close the list first.
      option.addEventListener("mousedown", function (event) {
        event.preventDefault();
        choose(i);
      });
      list.appendChild(option);
    });
    list.style.left = input.offsetLeft + "px";
    list.style.width = input.offsetWidth + "px";
    list.hidden = false;
    input.setAttribute("aria-expanded", "true");
  }

  function ask() {
    var prefix = input.value.trim().replace(/\s+/g, " ");
    if (prefix === lastAsked) return;
    lastAsked = prefix;
    if (pending) pending.abort();
    if (!prefix || prefix.length > 100) {
      close();
      return;
    }
    pending = new AbortController();
    fetch(url + "?q=" + encodeURIComponent(prefix), {
      headers: { Accept: "application/json" },
      signal: pending.signal,
    })
      .then(function (response) {
        // A throttled or failed request just shows nothing; typing on asks again.
        return response.ok ? response.json() : { suggestions: [] };
      })
      .then(function (body) {
        if (document.activeElement === input) show(body.suggestions || []);
      })
      .catch(function () {});
  }

  input.addEventListener("input", function () {
    clearTimeout(timer);
    timer = setTimeout(ask, DEBOUNCE_MS);
  });
  input.addEventListener("keydown", function (event) {
    if (event.key === "ArrowDown" || event.key === "ArrowUp") {
      if (list.hidden) {
        lastAsked = null;
        ask();
        return;
      }
      event.preventDefault();
      var step = event.key === "ArrowDown" ? 1 : -1;
      var next = active + step;
      if (next >= items.length) next = -1;
      if (next < -1) next = items.length - 1;
      setActive(next);
    } else if (event.key === "Enter" && !list.hidden && active >= 0) {
      event.preventDefault();
      choose(active);
    } else if (event.key === "Escape" && !list.hidden) {
      event.preventDefault();
      close();
    }
  });
  input.addEventListener("blur", close);
})();
