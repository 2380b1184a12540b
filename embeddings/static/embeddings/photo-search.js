// Photo search: preview the chosen photo on a <canvas>, let the shopper drag a rectangle around
// the item, and upload only that region (scaled down), so a busy photo searches for the one
// thing the shopper means. Without this script (or without canvas/DataTransfer support) the
// form uploads the whole photo and the server handles it the same way.
(function () {
  "use strict";
  var form = document.getElementById("photo-form");
  if (!form || !window.HTMLCanvasElement || typeof DataTransfer === "undefined") return;

  var input = form.querySelector('input[type="file"][name="image"]');
  var cropper = form.querySelector("[data-cropper]");
  var canvas = cropper.querySelector("canvas");
  var ctx = canvas.getContext("2d");
  var resetButton = cropper.querySelector("[data-crop-reset]");
  var statusLine = form.querySelector("[data-photo-status]");
  var maxBytes = parseInt(form.getAttribute("data-max-bytes"), 10) || 0;
  // The model looks at ~224 px; more pixels only make the upload slower.
  var MAX_SIDE = 1600;
  var MIN_SELECTION = 8; // photo pixels; a smaller drag is taken as a click that clears the crop
  var MAX_VIEW_HEIGHT = 480;

  var photo = null; // the decoded <img>
  var file = null;
  var selection = null; // {x0, y0, x1, y1} in photo pixels
  var dragging = false;
  var submitting = false;

  function say(message, isError) {
    statusLine.textContent = message || "";
    statusLine.classList.toggle("is-error", !!isError);
  }

  function describeSelection() {
    var r = region();
    if (selection) {
      say(
        "Searching the selected " + r.w + " × " + r.h + " px area at " + r.x + ", " + r.y +
          ". Drag again, or use the arrow keys, to change it."
      );
    } else {
      say(
        "Drag over the photo (or focus it and press an arrow key) to select the item you want; " +
          "the whole photo is used otherwise."
      );
    }
  }

  function layout() {
    // Never upscale, so on small photos one screen pixel is one photo pixel.
    var maxWidth = cropper.clientWidth || 480;
    var scale = Math.min(1, maxWidth / photo.naturalWidth, MAX_VIEW_HEIGHT / photo.naturalHeight);
    var cssWidth = Math.max(1, Math.round(photo.naturalWidth * scale));
    var cssHeight = Math.max(1, Math.round(photo.naturalHeight * scale));
    var dpr = window.devicePixelRatio || 1;
    canvas.style.width = cssWidth + "px";
    canvas.style.height = cssHeight + "px";
    canvas.width = Math.round(cssWidth * dpr);
    canvas.height = Math.round(cssHeight * dpr);
  }

  function region() {
    if (!selection) return { x: 0, y: 0, w: photo.naturalWidth, h: photo.naturalHeight };
    var x = Math.round(Math.min(selection.x0, selection.x1));
    var y = Math.round(Math.min(selection.y0, selection.y1));
    var w = Math.round(Math.max(selection.x0, selection.x1)) - x;
    var h = Math.round(Math.max(selection.y0, selection.y1)) - y;
    return { x: x, y: y, w: w, h: h };
  }

  function draw() {
    var sx = canvas.width / photo.naturalWidth;
    var sy = canvas.height / photo.naturalHeight;
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    ctx.setTransform(sx, 0, 0, sy, 0, 0);
    ctx.drawImage(photo, 0, 0);
    if (!selection) return;
    var r = region();
    // Dim everything outside the selection, then outline it.
    ctx.fillStyle = "rgba(0, 0, 0, 0.55)";
    ctx.beginPath();
    ctx.rect(0, 0, photo.naturalWidth, photo.naturalHeight);
    ctx.rect(r.x, r.y, r.w, r.h);
    ctx.fill("evenodd");
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.lineWidth = 2;
    ctx.strokeStyle = "#fff";
    ctx.setLineDash([6, 4]);
    ctx.strokeRect(r.x * sx + 1, r.y * sy + 1, Math.max(0, r.w * sx - 2), Math.max(0, r.h * sy - 2));
    ctx.setLineDash([]);
  }

  function toPhoto(event) {
    var box = canvas.getBoundingClientRect();
    var x = ((event.clientX - box.left) * photo.naturalWidth) / box.width;
    var y = ((event.clientY - box.top) * photo.naturalHeight) / box.height;
    return {
      x: Math.min(photo.naturalWidth, Math.max(0, x)),
      y: Math.min(photo.naturalHeight, Math.max(0, y)),
    };
  }

  input.addEventListener("change", function () {
    selection = null;
    photo = null;
    cropper.hidden = true;
    file = input.files && input.files[0];
    say("");
    if (!file) return;
    var url = URL.createObjectURL(file);
    var img = new Image();
    img.onload = function () {
      photo = img;
      cropper.hidden = false; // shown before layout() so its width is known
      layout();
      draw();
      describeSelection();
    };
    img.onerror = function () {
      URL.revokeObjectURL(url);
      if (maxBytes && file.size > maxBytes) {
        say("This file is larger than the upload limit; choose a smaller photo.", true);
      } else {
        say("This browser cannot preview the file, so it cannot be cropped; it will be uploaded as it is.", true);
      }
    };
    img.src = url;
  });

  canvas.addEventListener("pointerdown", function (event) {
    if (!photo) return;
    event.preventDefault();
    var p = toPhoto(event);
    selection = { x0: p.x, y0: p.y, x1: p.x, y1: p.y };
    dragging = true;
    canvas.setPointerCapture(event.pointerId);
    draw();
  });
  canvas.addEventListener("pointermove", function (event) {
    if (!dragging) return;
    var p = toPhoto(event);
    selection.x1 = p.x;
    selection.y1 = p.y;
    draw();
  });
  function endDrag() {
    if (!dragging) return;
    dragging = false;
    var r = region();
    if (r.w < MIN_SELECTION || r.h < MIN_SELECTION) selection = null;
    draw();
    describeSelection();
  }
  canvas.addEventListener("pointerup", endDrag);
  canvas.addEventListener("pointercancel", endDrag);

  // Keyboard: arrows move the selection (the first press selects the middle half of the photo),
  // Shift + arrows move its right/bottom edge, Alt makes each step one photo pixel, Escape clears.
  canvas.addEventListener("keydown", function (event) {
    if (!photo) return;
    if (event.key === "Escape" || event.key === "Delete" || event.key === "Backspace") {
      if (!selection) return;
      event.preventDefault();
      selection = null;
      draw();
      describeSelection();
      return;
    }
    var dx = { ArrowLeft: -1, ArrowRight: 1 }[event.key] || 0;
    var dy = { ArrowUp: -1, ArrowDown: 1 }[event.key] || 0;
    if (!dx && !dy) return;
    event.preventDefault();
    var W = photo.naturalWidth;
    var H = photo.naturalHeight;
    if (!selection) {
      selection = { x0: W / 4, y0: H / 4, x1: (3 * W) / 4, y1: (3 * H) / 4 };
    } else {
      var r = region();
      selection = { x0: r.x, y0: r.y, x1: r.x + r.w, y1: r.y + r.h };
      var stepX = event.altKey ? 1 : Math.max(1, Math.round(W / 50));
      var stepY = event.altKey ? 1 : Math.max(1, Math.round(H / 50));
      if (event.shiftKey) {
        selection.x1 = Math.min(W, Math.max(selection.x0 + MIN_SELECTION, selection.x1 + dx * stepX));
        selection.y1 = Math.min(H, Math.max(selection.y0 + MIN_SELECTION, selection.y1 + dy * stepY));
      } else {
        var w = selection.x1 - selection.x0;
        var h = selection.y1 - selection.y0;
        var x = Math.min(W - w, Math.max(0, selection.x0 + dx * stepX));
        var y = Math.min(H - h, Math.max(0, selection.y0 + dy * stepY));
        selection = { x0: x, y0: y, x1: x + w, y1: y + h };
      }
    }
    draw();
    describeSelection();
  });

  resetButton.addEventListener("click", function () {
    selection = null;
    draw();
    describeSelection();
  });

  window.addEventListener("resize", function () {
    if (photo && !cropper.hidden) {
      layout();
      draw();
    }
  });

  form.addEventListener("submit", function (event) {
    if (submitting || !photo) return; // no preview: the original file goes as it is
    event.preventDefault();
    var r = region();
    var scale = Math.min(1, MAX_SIDE / Math.max(r.w, r.h));
    var out = document.createElement("canvas");
    out.width = Math.max(1, Math.round(r.w * scale));
    out.height = Math.max(1, Math.round(r.h * scale));
    var outCtx = out.getContext("2d");
    // PNG stays lossless (and keeps transparency, which the server composites on white like
    // the catalog's images); everything else becomes a JPEG on white.
    var type = file.type === "image/png" ? "image/png" : "image/jpeg";
    if (type === "image/jpeg") {
      outCtx.fillStyle = "#fff";
      outCtx.fillRect(0, 0, out.width, out.height);
    }
    outCtx.drawImage(photo, r.x, r.y, r.w, r.h, 0, 0, out.width, out.height);
    say("Uploading…");
    out.toBlob(
      function (blob) {
        if (blob) {
          var base = (file.name || "photo").replace(/\.[^.]*$/, "") || "photo";
          var cropped = new File([blob], base + (type === "image/png" ? ".png" : ".jpg"), { type: type });
          var transfer = new DataTransfer();
          transfer.items.add(cropped);
          input.files = transfer.files;
        }
        submitting = true;
        form.submit();
      },
      type,
      0.92
    );
  });
})();
