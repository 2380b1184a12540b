// Suggestions on upload, on the admin's product add/change form: when staff choose image files
// (the "Add images" field or an image row), each file is sent to the product admin's
// upload-assist/ URL, and the answer is shown under that input: "Looks like: <Category> (accept)"
// (accept sets the category select), "colour: red (accept)" per suggested attribute (accept sets
// that key in the attributes JSON) and "Nearly identical to <product> (score)" warnings.
// Only advice: the form is saved as usual whatever it says.
(function () {
  "use strict";
  var MAX_FILES = 10; // per input change: a bulk choice still gets advice on the first ten
  var match = window.location.pathname.match(/^(.*\/catalog\/product\/)(?:add\/|(\d+)\/change\/)/);
  if (!match || !window.fetch || !window.FormData) return;
  var url = match[1] + "upload-assist/";
  var productId = match[2] || "";

  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (text) node.textContent = text;
    return node;
  }

  function panelFor(input) {
    var panel = input.parentNode.querySelector(":scope > .upload-assist");
    if (!panel) {
      panel = el("div", "upload-assist");
      panel.setAttribute("aria-live", "polite");
      input.insertAdjacentElement("afterend", panel);
    }
    return panel;
  }

  function acceptLink(category, line) {
    var select = document.getElementById("id_category");
    var link = el("a", "upload-assist-accept", "accept");
    link.href = "#";
    if (!select) return link;
    link.addEventListener("click", function (event) {
      event.preventDefault();
      select.value = String(category.id);
      select.dispatchEvent(new Event("change", { bubbles: true }));
      var done = el("span", "upload-assist-accepted", " \u2713 category set");
      link.replaceWith(done);
      line.classList.add("accepted");
    });
    return link;
  }

  // The attributes field is a JSON object in a textarea: accepting sets one key, keeps the rest.
  function acceptAttribute(attr, line) {
    var field = document.getElementById("id_attributes");
    var link = el("a", "upload-assist-accept", "accept");
    link.href = "#";
    link.addEventListener("click", function (event) {
      event.preventDefault();
      if (!field) return;
      var current = {};
      try {
        current = JSON.parse(field.value || "{}") || {};
      } catch (error) {
        link.textContent = "the attributes field is not valid JSON; fix it first";
        return;
      }
      if (typeof current !== "object" || Array.isArray(current)) current = {};
      current[attr.name] = attr.value;
      field.value = JSON.stringify(current);
      field.dispatchEvent(new Event("change", { bubbles: true }));
      link.replaceWith(el("span", "upload-assist-accepted", " \u2713 set"));
      line.classList.add("accepted");
    });
    return link;
  }

  function show(block, file, data) {
    block.textContent = "";
    block.appendChild(el("strong", "upload-assist-file", file.name + ": "));
    if (data.category) {
      var line = el("div", "upload-assist-category");
      line.appendChild(document.createTextNode("Looks like: "));
      line.appendChild(el("strong", "upload-assist-category-name", data.category.name));
      line.appendChild(
        document.createTextNode(" (" + Math.round(100 * data.category.confidence) + "% sure) ")
      );
      line.appendChild(acceptLink(data.category, line));
      block.appendChild(line);
    }
    (data.attributes || []).forEach(function (attr) {
      var line = el("div", "upload-assist-attribute");
      line.appendChild(document.createTextNode(attr.name + ": "));
      line.appendChild(el("strong", "upload-assist-attribute-value", attr.value));
      line.appendChild(document.createTextNode(" (" + Math.round(100 * attr.confidence) + "%) "));
      line.appendChild(acceptAttribute(attr, line));
      block.appendChild(line);
    });
    (data.duplicates || []).forEach(function (dup) {
      var warn = el("div", "upload-assist-duplicate");
      if (dup.thumbnail) {
        var img = el("img");
        img.src = dup.thumbnail;
        img.alt = "";
        img.width = 40;
        warn.appendChild(img);
      }
      warn.appendChild(document.createTextNode("Nearly identical to "));
      var link = el("a", "", dup.title);
      link.href = dup.admin_url;
      link.target = "_blank";
      warn.appendChild(link);
      warn.appendChild(document.createTextNode(" (score " + dup.score.toFixed(3) + ")"));
      block.appendChild(warn);
    });
    if (!data.category && !(data.duplicates || []).length && !(data.attributes || []).length) {
      block.appendChild(document.createTextNode("no suggestion."));
    }
  }

  function check(input) {
    var panel = panelFor(input);
    panel.textContent = "";
    var token = document.querySelector("input[name=csrfmiddlewaretoken]");
    Array.prototype.slice.call(input.files || [], 0, MAX_FILES).forEach(function (file) {
      var block = el("div", "upload-assist-result", "Checking " + file.name + "\u2026");
      panel.appendChild(block);
      var body = new FormData();
      body.append("image", file);
      if (productId) body.append("product_id", productId);
      fetch(url, {
        method: "POST",
        body: body,
        credentials: "same-origin",
        headers: token ? { "X-CSRFToken": token.value } : {},
      })
        .then(function (response) {
          return response.json().then(function (data) {
            if (!response.ok) throw new Error(data.error || "HTTP " + response.status);
            show(block, file, data);
          });
        })
        .catch(function (error) {
          block.textContent = "";
          block.classList.add("upload-assist-error");
          block.appendChild(el("strong", "upload-assist-file", file.name + ": "));
          block.appendChild(document.createTextNode("no suggestions (" + error.message + ")"));
        });
    });
  }

  document.addEventListener("change", function (event) {
    var input = event.target;
    if (input.matches && input.matches("#product_form input[type=file]")) check(input);
  });
})();
