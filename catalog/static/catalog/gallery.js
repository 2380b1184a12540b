// Product gallery: a thumbnail click shows that photo in the main frame (its medium thumbnails).
// Without this script a thumbnail is a plain link to the full photo.
(function () {
  "use strict";
  var main = document.querySelector("[data-gallery-main]");
  if (!main) return;
  var thumbs = document.querySelectorAll("[data-gallery-thumb]");
  thumbs.forEach(function (link) {
    link.addEventListener("click", function (event) {
      event.preventDefault();
      // The photo's medium thumbnails (data-main-*); the full photo while it has none yet.
      var srcset = link.getAttribute("data-main-srcset");
      if (srcset) {
        main.srcset = srcset;
      } else {
        main.removeAttribute("srcset");
      }
      main.src = link.getAttribute("data-main-src") || link.href;
      main.alt = link.querySelector("img").alt.replace(/ \(photo \d+\)$/, "");
      var searchLink = document.querySelector("[data-photo-search]");
      if (searchLink && link.getAttribute("data-photo-search-url")) {
        searchLink.href = link.getAttribute("data-photo-search-url");
      }
      thumbs.forEach(function (other) { other.removeAttribute("aria-current"); });
      link.setAttribute("aria-current", "true");
    });
  });
})();
