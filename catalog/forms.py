"""Admin forms: the product form with a multi-file "Add images" field, and the image inline form.

Every uploaded file goes through catalog.validators, the same checks the REST API applies.
"""

from __future__ import annotations

from django import forms
from django.core.exceptions import ValidationError
from django.core.files.uploadedfile import UploadedFile

from .models import Product, ProductImage
from .services import PRODUCT_EDITABLE_FIELDS, sku_generate
from .validators import SUPPORTED_TYPES_TEXT, validate_image_upload


class MultipleFileInput(forms.ClearableFileInput):
    """A file input that lets staff pick (or drag onto it) several files at once."""

    allow_multiple_selected = True


class MultipleImageField(forms.FileField):
    """Cleans to a list of uploaded files, each checked by validate_image_upload.

    Follows Django's "Uploading multiple files" recipe; errors name the offending file so staff
    know which one of several to fix.
    """

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("widget", MultipleFileInput(attrs={"accept": "image/*"}))
        super().__init__(*args, **kwargs)

    def clean(self, data, initial=None) -> list[UploadedFile]:
        single_clean = super().clean
        items = data if isinstance(data, list | tuple) else [data]
        files = [f for f in (single_clean(item, initial) for item in items) if f]
        errors: list[ValidationError] = []
        for file in files:
            try:
                validate_image_upload(file)
            except ValidationError as exc:
                errors.append(ValidationError(f"{file.name}: {exc.messages[0]}", code=exc.code))
        if errors:
            raise ValidationError(errors)
        return files


class ProductAdminForm(forms.ModelForm):
    add_images = MultipleImageField(
        label="Add images",
        required=False,
        help_text=f"Select or drag several files at once ({SUPPORTED_TYPES_TEXT}). "
        "They are added after the existing images and indexed in the background.",
    )

    class Meta:
        model = Product
        fields = list(PRODUCT_EDITABLE_FIELDS)
        widgets = {"attributes": forms.Textarea(attrs={"rows": 3, "cols": 60})}

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # As in the API, a product without a SKU gets a generated one.
        self.fields["sku"].required = False
        self.fields["sku"].help_text = "Leave empty to generate one."
        # A form (or an older script) that leaves the boost out means "no boost", not an error.
        self.fields["boost"].required = False

    def clean_boost(self) -> float:
        boost = self.cleaned_data.get("boost")
        return 0.0 if boost is None else boost

    def clean_sku(self) -> str:
        return (self.cleaned_data.get("sku") or "").strip() or sku_generate()


class ProductImageForm(forms.ModelForm):
    class Meta:
        model = ProductImage
        fields = ["image", "position", "alt_text"]
        # A plain FileField: our validator decides about the content, with its own messages
        # (forms.ImageField would reject first, with a vaguer one).
        field_classes = {"image": forms.FileField}

    def clean_image(self):
        image = self.cleaned_data.get("image")
        # Only a newly uploaded file needs checking; an unchanged one was checked on upload.
        if isinstance(image, UploadedFile):
            validate_image_upload(image)
        return image
