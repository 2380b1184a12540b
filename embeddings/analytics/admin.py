"""Admin > Embeddings > Search analytics: one report page over a chosen period (top queries with
click-through, queries with no or few results, the slowest queries, overall figures).

Registered as the SearchEvent model's admin so it sits in the admin index with Django's own
view permission ("Can view logged search"); its list page is the report. Rows are written only by
searching, so nobody adds, edits or deletes them here (the daily prune does).
"""

from __future__ import annotations

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest
from django.template.response import TemplateResponse

from .forms import ReportPeriodForm
from .models import SearchEvent
from .selectors import search_report


@admin.register(SearchEvent)
class SearchAnalyticsAdmin(admin.ModelAdmin):
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def changelist_view(self, request: HttpRequest, extra_context=None):
        if not self.has_view_permission(request):
            raise PermissionDenied
        form = ReportPeriodForm(request.GET or {"period": "7d"})
        report = None
        if form.is_valid():
            start, end = form.bounds()
            report = search_report(start=start, end=end, few_threshold=form.few_threshold)
        context = {
            **self.admin_site.each_context(request),
            "title": "Search analytics",
            "opts": self.opts,
            "form": form,
            "report": report,
            **(extra_context or {}),
        }
        return TemplateResponse(
            request,
            "admin/embeddings/search_analytics.html",
            context,
            status=200 if report else 400,
        )
