"""Forms of the shopper-facing search page: they turn query strings and uploads into clean
values or messages a shopper can act on, so bad input never reaches the selectors."""

from __future__ import annotations

from django import forms
from django.conf import settings
from django.template.defaultfilters import filesizeformat

from catalog.attributes import MAX_VALUE_CHARS as MAX_ATTRIBUTE_VALUE_CHARS
from catalog.attributes import facet_attributes
from catalog.selectors import category_list

from . import runtime
from .encoder import ImageDecodeError, load_image
from .refine import SORTS
from .selectors import MAX_QUERY_CHARS
from .steering import split_negatives

PRICE_FIELD = {"required": False, "min_value": 0, "max_digits": 10, "decimal_places": 2}


def price_errors(label: str) -> dict[str, str]:
    # Django's defaults ("Ensure this value is ...") do not say which of the two boxes is wrong.
    return {
        "invalid": f"{label} must be a number, e.g. 10 or 9.99.",
        "min_value": f"{label} cannot be negative.",
        "max_digits": f"{label} is too large.",
        "max_whole_digits": f"{label} is too large.",
        "max_decimal_places": f"{label} can have at most 2 decimal places.",
    }


class FilterForm(forms.Form):
    """Text query and shopper filters; shared by the GET search form and the photo upload."""

    q = forms.CharField(
        required=False,
        max_length=MAX_QUERY_CHARS,
        label="Search",
        error_messages={
            "max_length": "The search text is too long: keep it under %(limit_value)d characters "
            "(it has %(show_value)d)."
        },
    )
    category = forms.ChoiceField(
        required=False,
        error_messages={"invalid_choice": "That category does not exist; pick one from the list."},
    )
    price_min = forms.DecimalField(
        label="Min price", error_messages=price_errors("Min price"), **PRICE_FIELD
    )
    price_max = forms.DecimalField(
        label="Max price", error_messages=price_errors("Max price"), **PRICE_FIELD
    )
    sort = forms.ChoiceField(
        required=False,
        choices=list(SORTS.items()),
        label="Sort by",
        error_messages={"invalid_choice": "Pick a sort order from the list."},
    )
    # Photo + words: how much the photo counts against the words (0 words only .. 1 photo only).
    image_weight = forms.FloatField(
        required=False,
        min_value=0,
        max_value=1,
        label="Words ↔ photo",
        error_messages={
            "invalid": "The words ↔ photo balance must be a number from 0 to 1.",
            "min_value": "The words ↔ photo balance must be a number from 0 to 1.",
            "max_value": "The words ↔ photo balance must be a number from 0 to 1.",
        },
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # Read per form, not at import: categories change while the server runs.
        self.fields["category"].choices = [("", "All categories")] + [
            (c.slug, c.name) for c in category_list()
        ]

    def clean_q(self) -> str:
        # Collapse runs of whitespace the way the selector does, so the limit counts the same.
        return " ".join((self.cleaned_data.get("q") or "").split())

    def clean(self):
        cleaned = super().clean()
        for name, values in self.attribute_filters().items():
            if any(len(v) > MAX_ATTRIBUTE_VALUE_CHARS for v in values):
                raise forms.ValidationError(
                    f"A {name} to filter by has at most {MAX_ATTRIBUTE_VALUE_CHARS} characters."
                )
        low, high = cleaned.get("price_min"), cleaned.get("price_max")
        if low is not None and high is not None and low > high:
            raise forms.ValidationError(
                "Min price is higher than max price; swap them or clear one."
            )
        return cleaned

    def attribute_filters(self) -> dict[str, tuple[str, ...]]:
        """{attribute: values} from the query string (`colour=red&colour=blue`: either), for
        the shop's facet attributes; values lower-cased like the stored ones."""
        getlist = getattr(self.data, "getlist", None)
        if getlist is None:
            return {}
        out = {}
        for name in facet_attributes():
            values = tuple(dict.fromkeys(" ".join(v.split()).lower() for v in getlist(name)))
            values = tuple(v for v in values if v)
            if values:
                out[name] = values
        return out

    def query_terms(self) -> tuple[str, list[str]]:
        """(words to find, terms to leave out): ``-word`` or ``-"two words"`` in the search box
        leaves a term out, as in web search ("shirt -striped")."""
        return split_negatives(self.cleaned_data.get("q") or "")

    def filters(self) -> dict:
        """The filters as keyword arguments for the selectors."""
        return {
            "category": self.cleaned_data.get("category") or None,
            "price_min": self.cleaned_data.get("price_min"),
            "price_max": self.cleaned_data.get("price_max"),
            "attributes": self.attribute_filters() or None,
        }


class SearchForm(FilterForm):
    """GET `/`: a text query, a stored photo query (qi token) or a "similar to" product."""

    qi = forms.CharField(required=False, max_length=64, widget=forms.HiddenInput)
    similar = forms.IntegerField(
        required=False,
        min_value=1,
        widget=forms.HiddenInput,
        error_messages={
            "invalid": "That link to similar products is broken.",
            "min_value": "That link to similar products is broken.",
        },
    )
    # A catalog image to search with (a product page's "search with this photo").
    photo = forms.IntegerField(
        required=False,
        min_value=1,
        widget=forms.HiddenInput,
        error_messages={
            "invalid": "That photo link is broken.",
            "min_value": "That photo link is broken.",
        },
    )


class PhotoSearchForm(FilterForm):
    """POST `/`: a photo (the client may have cropped it already), optionally with text."""

    image = forms.FileField(
        required=False,
        label="Photo",
        widget=forms.ClearableFileInput(attrs={"accept": "image/*"}),
    )

    def clean_image(self):
        upload = self.cleaned_data.get("image")
        if upload is None:
            return None
        limit = settings.MAX_UPLOAD_BYTES
        if upload.size > limit:
            raise forms.ValidationError(
                f"The photo is {filesizeformat(upload.size)}; the limit is {filesizeformat(limit)}. "
                "Crop it or upload a smaller photo."
            )
        try:
            return load_image(
                upload,
                max_pixels=settings.MAX_IMAGE_PIXELS,
                min_side=runtime.get_encoder().decode_side,
                max_decode_pixels=settings.EMBEDDINGS_QUERY_MAX_PIXELS,
            )
        except ImageDecodeError as exc:
            raise forms.ValidationError(str(exc)) from exc

    def clean(self):
        cleaned = super().clean()
        if not self.errors and cleaned.get("image") is None and not cleaned.get("q"):
            raise forms.ValidationError(
                "Choose a photo to search with (or type what you are looking for)."
            )
        return cleaned
