"""Search API shapes: the parameters (query string or multipart form) and the ranked results."""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.validators import RegexValidator
from drf_spectacular.extensions import OpenApiSerializerExtension
from drf_spectacular.utils import extend_schema_field
from PIL import Image
from rest_framework import serializers

from catalog.api.serializers import ProductSerializer
from catalog.validators import validate_upload_size
from searchsite.api import MAX_PAGE_SIZE, ApiError

from .. import runtime
from ..encoder import ImageDecodeError, ImageTooLargeError, load_image
from ..refine import SORTS
from ..selectors import MAX_QUERY_CHARS
from ..steering import MAX_PARTS, MAX_WEIGHT, MIN_WEIGHT
from ..suggestions import MAX_PREFIX_CHARS as MAX_SUGGEST_PREFIX_CHARS

DEFAULT_PAGE_SIZE = 24
DEFAULT_SIMILAR = 12


class QueryImageField(serializers.FileField):
    """An uploaded query image, decoded to RGB (never stored).

    A file over MAX_UPLOAD_BYTES -> 413 ``file_too_large``; too many pixels (over
    MAX_IMAGE_PIXELS, a decompression bomb, or a non-JPEG over EMBEDDINGS_QUERY_MAX_PIXELS: those
    are decoded in full, JPEGs at a reduced scale) -> 400 ``image_too_large``; not decodable ->
    400 ``invalid_image``. Raised as ApiError so the status survives field validation.
    """

    def to_internal_value(self, data) -> Image.Image:
        file = super().to_internal_value(data)
        try:
            validate_upload_size(file)
        except DjangoValidationError as exc:
            raise ApiError(exc.messages[0], code="file_too_large", status_code=413) from None
        try:
            return load_image(
                file,
                max_pixels=settings.MAX_IMAGE_PIXELS,
                min_side=runtime.get_encoder().decode_side,
                max_decode_pixels=settings.EMBEDDINGS_QUERY_MAX_PIXELS,
            )
        except ImageTooLargeError as exc:
            raise ApiError(str(exc), code="image_too_large") from None
        except ImageDecodeError as exc:
            raise ApiError(str(exc), code="invalid_image") from None


@extend_schema_field({"type": "number"})
class PriceField(serializers.DecimalField):
    """A price filter: any decimal number, stated as a number in the schema (as on the product
    list), not as the decimal string DRF would describe."""

    def __init__(self, **kwargs):
        super().__init__(max_digits=None, decimal_places=None, required=False, **kwargs)


class SearchFilterSerializer(serializers.Serializer):
    category = serializers.CharField(required=False, allow_blank=True, help_text="Category slug.")
    price_min = PriceField(help_text="Lowest price, inclusive.")
    price_max = PriceField(help_text="Highest price, inclusive.")
    sort = serializers.ChoiceField(
        choices=list(SORTS),
        required=False,
        default="relevance",
        help_text="`relevance` (default), `price` (low to high), `-price` (high to low) or "
        "`newest`. A query's results (its ranked candidates) are reordered; products without a "
        "price come last in both price orders.",
        error_messages={"invalid_choice": "sort must be one of relevance, price, -price, newest."},
    )
    page = serializers.IntegerField(
        min_value=1,
        required=False,
        default=1,
        help_text="Page number, from 1; past the last page: 404.",
    )
    page_size = serializers.IntegerField(
        min_value=1, max_value=MAX_PAGE_SIZE, required=False, default=DEFAULT_PAGE_SIZE
    )

    def validate(self, attrs: dict) -> dict:
        low, high = attrs.get("price_min"), attrs.get("price_max")
        if low is not None and high is not None and low > high:
            raise serializers.ValidationError(
                {"price_min": f"price_min ({low}) is greater than price_max ({high}); swap them."}
            )
        return attrs


QUERY_TOO_LONG = "The text query is too long; the limit is {max_length} characters."


class NotTermsField(serializers.ListField):
    """Terms to leave out: repeated (``not=red&not=striped``), comma-separated (``not=red,
    striped``) or, in JSON, a list of strings."""

    def __init__(self, **kwargs):
        super().__init__(
            child=serializers.CharField(max_length=MAX_QUERY_CHARS, trim_whitespace=True),
            max_length=MAX_PARTS,
            required=False,
            help_text="Terms to leave out: results are pushed away from them, and products "
            "with all the words of one are left out of the word matching. Repeat the "
            "parameter or separate terms by commas; at most 8 terms (parts included). "
            "Together they weigh `not_weight`.",
            error_messages={"max_length": "At most {max_length} terms to leave out."},
            **kwargs,
        )

    def to_internal_value(self, data):
        if isinstance(data, str):
            data = [data]
        if isinstance(data, list) and all(isinstance(t, str) for t in data):
            data = [t for term in data for t in term.split(",") if t.strip()]
        return super().to_internal_value(data)


class SteeringFieldsMixin:
    """`not` and `not_weight` (a field named `not` cannot be a class attribute)."""

    def get_fields(self):
        fields = super().get_fields()
        fields["not"] = NotTermsField()
        fields["not_weight"] = serializers.FloatField(
            min_value=0,
            max_value=1,
            required=False,
            help_text="How much the `not` terms weigh together against the wanted parts "
            "(0..1; default EMBEDDINGS_NOT_WEIGHT, 0.5).",
        )
        return fields


class SearchQuerySerializer(SteeringFieldsMixin, SearchFilterSerializer):
    """GET search/: a text search, so `q` is required."""

    q = serializers.CharField(
        max_length=MAX_QUERY_CHARS,
        trim_whitespace=True,
        # Says in the schema that blanks alone are no query (the "blank" error below).
        validators=[RegexValidator(r"\S", message="The text query is empty; give some words.")],
        help_text="Text query, e.g. `giraffe shirt` (required; at most 500 characters).",
        error_messages={
            "required": "Give a text query, e.g. ?q=giraffe+shirt (to search by image, POST a "
            "multipart form with `image`).",
            "blank": "The text query is empty; give some words, e.g. ?q=giraffe+shirt.",
            "max_length": QUERY_TOO_LONG,
        },
    )


class SearchFormSerializer(SteeringFieldsMixin, SearchFilterSerializer):
    """POST search/: an image, a text, or both."""

    q = serializers.CharField(
        required=False,
        allow_blank=True,
        max_length=MAX_QUERY_CHARS,
        trim_whitespace=True,
        help_text="Text query (at most 500 characters); with `image`, weighed by `image_weight`.",
        error_messages={"max_length": QUERY_TOO_LONG},
    )
    image = QueryImageField(
        required=False,
        help_text="Query image (JPEG, PNG, WebP, GIF, BMP or TIFF), at most MAX_UPLOAD_BYTES "
        "(10 MB) and MAX_IMAGE_PIXELS; other formats than JPEG at most "
        "EMBEDDINGS_QUERY_MAX_PIXELS (16 MP). With `q` too, weighed by `image_weight`.",
    )
    image_weight = serializers.FloatField(
        min_value=0,
        max_value=1,
        required=False,
        help_text="Photo + words: the image weighs this, the text 1 - this (0 words only, "
        "1 image only; default 0.5, both equally).",
    )


class SimilarQuerySerializer(serializers.Serializer):
    limit = serializers.IntegerField(
        min_value=1, max_value=MAX_PAGE_SIZE, required=False, default=DEFAULT_SIMILAR
    )


class SearchHitSerializer(serializers.Serializer):
    score = serializers.FloatField(
        help_text="Cosine similarity of the best-matching image, higher is better."
    )
    matched_image_id = serializers.IntegerField(source="image_id", allow_null=True)
    product = ProductSerializer()


class SearchQueryEchoSerializer(serializers.Serializer):
    text = serializers.CharField(
        allow_blank=True, help_text="The text searched for (positive parts' texts, joined)."
    )
    image = serializers.BooleanField(help_text="Whether an image took part.")
    # `not` is set in get_fields (a keyword); image_weight only for photo + words.
    image_weight = serializers.FloatField(
        allow_null=True,
        help_text="Photo + words: the images' share of the positive weight; null otherwise.",
    )

    def get_fields(self):
        fields = super().get_fields()
        fields["not"] = serializers.ListField(
            child=serializers.CharField(), help_text="The terms left out."
        )
        return fields


class FacetValueSerializer(serializers.Serializer):
    value = serializers.CharField(
        required=False, help_text="Category slug or attribute value (filter with it)."
    )
    label = serializers.CharField(required=False, help_text="Category name or attribute value.")
    min = serializers.FloatField(required=False, help_text="Price facet: lowest price, inclusive.")
    max = serializers.FloatField(
        required=False,
        allow_null=True,
        help_text="Price facet: highest price, exclusive; null for the last, open bucket.",
    )
    count = serializers.IntegerField(help_text="Results with this value.")


class SearchResponseSerializer(serializers.Serializer):
    count = serializers.IntegerField(
        help_text="Products the query can return: those matching the filters (at most 1000)."
    )
    next = serializers.URLField(allow_null=True)
    previous = serializers.URLField(allow_null=True)
    query = SearchQueryEchoSerializer()
    search_id = serializers.UUIDField(
        allow_null=True,
        help_text="Identifies this search for click reporting (POST search/clicks/); given on "
        "the first page only (null on later pages, and when search logging is off).",
    )
    did_you_mean = serializers.CharField(
        allow_null=True,
        help_text="The query with each word the catalog does not have replaced by the nearest "
        'catalog word ("tshrit" -> "tshirt"), when that finds products; null otherwise (and '
        "for a photo alone).",
    )
    facets = serializers.DictField(
        child=FacetValueSerializer(many=True),
        help_text="Counts over every result of the query (not just this page): `category`, each "
        "of CATALOG_FACET_ATTRIBUTES (e.g. `colour`) as {value, label, count}, most frequent "
        "first, and `price` as {min, max, count} buckets (SEARCH_FACET_PRICE_EDGES).",
    )
    results = SearchHitSerializer(many=True)


class SimilarResponseSerializer(serializers.Serializer):
    count = serializers.IntegerField()
    results = SearchHitSerializer(many=True)


class SearchFormSchema(OpenApiSerializerExtension):
    """States in the schema what SearchFormSerializer alone cannot: a POST search needs an image,
    or a text that is not only blanks (else 400 "Give a text query (q), an image, or both.")."""

    target_class = SearchFormSerializer

    def map_serializer(self, auto_schema, direction):
        schema = auto_schema._map_serializer(self.target, direction, bypass_extensions=True)
        schema["anyOf"] = [
            {"required": ["image"]},
            {"required": ["q"], "properties": {"q": {"pattern": r"\S"}}},
        ]
        return schema


# -- type-ahead (GET search/suggest/) ---------------------------------------------------------


class SuggestQuerySerializer(serializers.Serializer):
    q = serializers.CharField(
        max_length=MAX_SUGGEST_PREFIX_CHARS,
        trim_whitespace=True,
        validators=[RegexValidator(r"\S", message="The prefix is empty; give a few letters.")],
        help_text="What the shopper has typed so far, e.g. `tsh` (1..100 characters).",
        error_messages={
            "required": "Give the start of a query, e.g. ?q=tsh.",
            "blank": "The prefix is empty; give a few letters, e.g. ?q=tsh.",
            "max_length": "The prefix is too long; the limit is {max_length} characters.",
        },
    )


class SuggestionSerializer(serializers.Serializer):
    text = serializers.CharField(help_text="The completed query, lower-case.")
    kind = serializers.ChoiceField(
        choices=["query", "category", "title"],
        help_text="`query`: searched by several shoppers; `category`: a category name; `title`: "
        "the opening words of product titles.",
    )


class SuggestResponseSerializer(serializers.Serializer):
    suggestions = SuggestionSerializer(
        many=True, help_text="Most popular first; at most SEARCH_SUGGEST_LIMIT (8)."
    )


# -- steerable queries: POST search/ with a JSON body of weighted parts -------------------------


class QueryPartSerializer(serializers.Serializer):
    """One part: exactly one of `text`, `image_id`, `product_id`; a weight in [-1, 1]."""

    text = serializers.CharField(
        required=False,
        max_length=MAX_QUERY_CHARS,
        trim_whitespace=True,
        help_text="Words, e.g. `red dress` (at most 500 characters).",
        error_messages={"max_length": QUERY_TOO_LONG},
    )
    image_id = serializers.IntegerField(
        required=False, min_value=1, help_text="A catalog image (of an active product)."
    )
    product_id = serializers.IntegerField(
        required=False,
        min_value=1,
        help_text="An active product: the mean of its indexed images' vectors.",
    )
    weight = serializers.FloatField(
        required=False,
        default=1.0,
        min_value=MIN_WEIGHT,
        max_value=MAX_WEIGHT,
        help_text="-1..1 (default 1): positive pulls results towards the part, negative pushes "
        "them away, 0 leaves it out.",
    )

    def validate(self, attrs: dict) -> dict:
        given = [key for key in ("text", "image_id", "product_id") if key in attrs]
        if len(given) != 1:
            raise serializers.ValidationError(
                "Give exactly one of `text`, `image_id` or `product_id` in each part"
                + (f" (this one has {', '.join(given)})." if given else ".")
            )
        if "text" in attrs and not attrs["text"]:
            raise serializers.ValidationError({"text": "The text is empty; give some words."})
        return attrs


class SearchPartsSerializer(SteeringFieldsMixin, SearchFilterSerializer):
    """POST search/ as JSON: a query of several weighted parts, plus filters and paging."""

    parts = QueryPartSerializer(
        many=True,
        min_length=1,
        max_length=MAX_PARTS,
        help_text="1..8 weighted parts (with `not` terms: 8 in all). The query vector is "
        "sum(weight * unit vector of the part), normalised; at least one weight must be "
        "positive.",
        error_messages={
            "min_length": 'Give at least one part, e.g. [{{"text": "red dress"}}].',
            "max_length": "At most {max_length} parts.",
        },
    )


class QueryPartSchema(OpenApiSerializerExtension):
    """States that a part has exactly one of its three sources (the serializer checks it)."""

    target_class = QueryPartSerializer

    def map_serializer(self, auto_schema, direction):
        schema = auto_schema._map_serializer(self.target, direction, bypass_extensions=True)
        schema["oneOf"] = [{"required": [key]} for key in ("text", "image_id", "product_id")]
        return schema


class SearchPartsSchema(OpenApiSerializerExtension):
    """States the number of parts the serializer allows (a nested list's bounds are not
    picked up from it)."""

    target_class = SearchPartsSerializer

    def map_serializer(self, auto_schema, direction):
        schema = auto_schema._map_serializer(self.target, direction, bypass_extensions=True)
        schema["properties"]["parts"].update(minItems=1, maxItems=MAX_PARTS)
        return schema
