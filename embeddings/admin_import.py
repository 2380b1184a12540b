"""Admin > Embeddings > Catalog imports (issue 11, item 5): bulk import from the admin.

Step 1 (the model's "add" page): upload a CSV, and optionally a ZIP of its images; both are
checked before anything is stored. Step 2 (``<id>/map/``): map the CSV's columns to product
fields, defaults guessed from the column names; "Start import" queues the Celery task. The job's
page (the model's "change" page, read-only) shows the progress while the worker runs (it reloads
itself), then the counts, the rows that were skipped with their CSV line (also as a CSV
download), and the index status of the images imported. Files live under MEDIA_ROOT/imports/jobs/,
which the media view never serves.
"""

from __future__ import annotations

import csv

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html

from . import import_jobs
from .models import CatalogImport

CSV_EXTENSIONS = (".csv", ".txt")


class ImportUploadForm(forms.Form):
    csv_file = forms.FileField(
        label="CSV file",
        help_text="UTF-8, first line names the columns, one product per row.",
    )
    zip_file = forms.FileField(
        label="ZIP of images",
        required=False,
        help_text=(
            "Optional. The CSV's image paths are relative to the ZIP's root. Without a ZIP they "
            "are relative to the server's import folder (IMPORT_ROOT)."
        ),
    )

    def clean_csv_file(self):
        file = self.cleaned_data["csv_file"]
        if not file.name.lower().endswith(CSV_EXTENSIONS):
            raise ValidationError(f"{file.name!r} is not a CSV file (expected a .csv name).")
        self.header = import_jobs.csv_header_read(file)
        return file

    def clean_zip_file(self):
        file = self.cleaned_data.get("zip_file")
        if file:
            self.zip_images = len(import_jobs.zip_members_check(file))
        return file


class ImportMappingForm(forms.Form):
    """Which CSV column fills each product field; SKU, title and image path are required."""

    LABELS = {
        "sku": "SKU (the key: a second import updates the product with the same SKU)",
        "title": "Title",
        "path": "Image path",
        "price": "Price",
        "category": "Category",
        "description": "Description",
    }

    def __init__(self, *args, header: list[str], **kwargs):
        super().__init__(*args, **kwargs)
        choices = [(c, c) for c in header]
        for name in import_jobs.FIELDS:
            required = name in import_jobs.REQUIRED_FIELDS
            if name == "description":
                self.fields[name] = forms.MultipleChoiceField(
                    choices=choices,
                    required=False,
                    widget=forms.CheckboxSelectMultiple,
                    label=self.LABELS[name],
                    help_text="Several columns become 'column: value' lines.",
                )
            else:
                blank = "-- choose a column --" if required else "-- not imported --"
                self.fields[name] = forms.ChoiceField(
                    choices=[("", blank), *choices],
                    required=required,
                    label=self.LABELS[name],
                    error_messages={"required": "Choose the column that holds this field."},
                )

    def clean(self):
        data = super().clean()
        used = [(n, data.get(n)) for n in ("sku", "title", "path") if data.get(n)]
        seen: dict[str, str] = {}
        for name, column in used:
            if column in seen:
                raise ValidationError(
                    f"{self.LABELS[seen[column]].split(' (')[0]} and {self.LABELS[name]} cannot "
                    f"both come from the column {column!r}."
                )
            seen[column] = name
        return data

    def mapping(self) -> dict[str, object]:
        return {name: self.cleaned_data.get(name) or "" for name in import_jobs.FIELDS} | {
            "description": list(self.cleaned_data.get("description") or [])
        }


@admin.register(CatalogImport)
class CatalogImportAdmin(admin.ModelAdmin):
    list_display = [
        "__str__",
        "status",
        "progress",
        "created",
        "updated",
        "unchanged",
        "skipped",
        "created_by",
        "created_at",
    ]
    list_filter = ["status"]
    list_select_related = ["created_by"]

    @admin.display(description="rows")
    def progress(self, obj: CatalogImport) -> str:
        return f"{obj.rows_done} / {obj.rows_total}" if obj.rows_total else "-"

    # Importing writes products: staff need that right as well as this model's.
    def has_add_permission(self, request: HttpRequest) -> bool:
        return super().has_add_permission(request) and request.user.has_perms(
            ["catalog.add_product", "catalog.change_product"]
        )

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False  # a job is a record; its page is read-only, re-running is its own button

    def delete_model(self, request: HttpRequest, obj: CatalogImport) -> None:
        import_jobs.catalog_import_files_delete(obj)
        super().delete_model(request, obj)

    def delete_queryset(self, request: HttpRequest, queryset) -> None:
        for job in queryset:
            import_jobs.catalog_import_files_delete(job)
        super().delete_queryset(request, queryset)

    def get_urls(self):
        def wrap(view):
            return self.admin_site.admin_view(view)

        info = f"{self.opts.app_label}_{self.opts.model_name}"
        return [
            path("<int:job_id>/map/", wrap(self.map_view), name=f"{info}_map"),
            path("<int:job_id>/errors.csv", wrap(self.errors_csv_view), name=f"{info}_errors"),
            path("<int:job_id>/restart/", wrap(self.restart_view), name=f"{info}_restart"),
            *super().get_urls(),
        ]

    def _context(self, request: HttpRequest, title: str, **extra) -> dict:
        return {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": title,
            **extra,
        }

    # -- step 1: upload -------------------------------------------------------------------------
    def add_view(self, request: HttpRequest, form_url: str = "", extra_context=None):
        if not self.has_add_permission(request):
            raise PermissionDenied
        form = ImportUploadForm(request.POST or None, request.FILES or None)
        if request.method == "POST" and form.is_valid():
            csv_file = form.cleaned_data["csv_file"]
            zip_file = form.cleaned_data.get("zip_file")
            job = CatalogImport(
                csv_name=csv_file.name,
                zip_name=zip_file.name if zip_file else "",
                header=form.header,
                columns=import_jobs.columns_guess(form.header),
                created_by=request.user,
            )
            job.csv_file.save("catalog.csv", csv_file, save=False)
            if zip_file:
                job.zip_file.save("images.zip", zip_file, save=False)
            job.save()
            return redirect("admin:embeddings_catalogimport_map", job_id=job.pk)
        context = self._context(
            request,
            "Import products: upload",
            form=form,
            max_files=self._settings("IMPORT_ZIP_MAX_FILES"),
            max_bytes=self._settings("IMPORT_ZIP_MAX_BYTES"),
            import_root=import_jobs.import_root(),
        )
        return TemplateResponse(request, "admin/embeddings/catalogimport/upload.html", context)

    @staticmethod
    def _settings(name: str):
        from django.conf import settings

        return getattr(settings, name)

    # -- step 2: map columns and start ------------------------------------------------------------
    def map_view(self, request: HttpRequest, job_id: int):
        if not self.has_add_permission(request):
            raise PermissionDenied
        job = get_object_or_404(CatalogImport, pk=job_id)
        if job.status != CatalogImport.Status.NEW:
            self.message_user(request, "This import has already been started.", messages.WARNING)
            return redirect("admin:embeddings_catalogimport_change", job.pk)
        form = ImportMappingForm(request.POST or None, initial=job.columns, header=job.header)
        if request.method == "POST" and form.is_valid():
            import_jobs.catalog_import_queue(job=job, columns=form.mapping())
            return redirect("admin:embeddings_catalogimport_change", job.pk)
        context = self._context(
            request, "Import products: map the columns", form=form, job=job, header=job.header
        )
        return TemplateResponse(request, "admin/embeddings/catalogimport/map.html", context)

    # -- the job's page ---------------------------------------------------------------------------
    def change_view(self, request: HttpRequest, object_id: str, form_url="", extra_context=None):
        job = self.get_object(request, object_id)
        if job is None:
            return self._get_obj_does_not_exist_redirect(request, self.opts, object_id)
        if not self.has_view_permission(request, job):
            raise PermissionDenied
        context = self._context(
            request,
            f"Import #{job.pk}: {job.get_status_display()}",
            job=job,
            original=job,
            images=import_jobs.catalog_import_image_counts(job),
            percent=int(100 * job.rows_done / job.rows_total) if job.rows_total else 0,
            can_restart=self.has_add_permission(request)
            and import_jobs.catalog_import_can_restart(job),
            can_map=self.has_add_permission(request) and job.status == CatalogImport.Status.NEW,
            errors_shown=job.errors[:200],
            health_url=reverse("admin:embeddings_index_health"),
            refresh=job.is_active,
        )
        return TemplateResponse(request, "admin/embeddings/catalogimport/detail.html", context)

    def errors_csv_view(self, request: HttpRequest, job_id: int) -> HttpResponse:
        job = get_object_or_404(CatalogImport, pk=job_id)
        if not self.has_view_permission(request, job):
            raise PermissionDenied
        response = HttpResponse(content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = f'attachment; filename="import-{job.pk}-errors.csv"'
        writer = csv.writer(response)
        writer.writerow(["line", "error"])
        writer.writerows(job.errors)
        return response

    def restart_view(self, request: HttpRequest, job_id: int) -> HttpResponse:
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not self.has_add_permission(request):
            raise PermissionDenied
        with transaction.atomic():
            job = get_object_or_404(CatalogImport.objects.select_for_update(), pk=job_id)
            if not import_jobs.catalog_import_can_restart(job):
                self.message_user(
                    request, "This import is still running or not started.", messages.WARNING
                )
                return redirect("admin:embeddings_catalogimport_change", job.pk)
            import_jobs.catalog_import_queue(job=job, columns=job.columns)
        self.message_user(
            request,
            format_html(
                "Import #{} queued again: rows already imported are updated or left alone.", job.pk
            ),
            messages.SUCCESS,
        )
        return redirect("admin:embeddings_catalogimport_change", job.pk)
