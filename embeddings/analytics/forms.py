"""The report page's period selector: the last 24 hours, 7 days, 30 days, or custom dates."""

from __future__ import annotations

from datetime import datetime, time, timedelta

from django import forms
from django.utils import timezone

from .selectors import DEFAULT_FEW_RESULTS

PERIODS = {"24h": timedelta(hours=24), "7d": timedelta(days=7), "30d": timedelta(days=30)}


class ReportPeriodForm(forms.Form):
    period = forms.ChoiceField(
        choices=[
            ("24h", "Last 24 hours"),
            ("7d", "Last 7 days"),
            ("30d", "Last 30 days"),
            ("custom", "Custom dates"),
        ],
        initial="7d",
        required=False,
    )
    start = forms.DateField(
        required=False, label="From", widget=forms.DateInput(attrs={"type": "date"})
    )
    end = forms.DateField(
        required=False,
        label="To (inclusive)",
        widget=forms.DateInput(attrs={"type": "date"}),
    )
    few = forms.IntegerField(
        required=False,
        min_value=1,
        max_value=1000,
        label="Few results: at most",
        initial=DEFAULT_FEW_RESULTS,
        widget=forms.NumberInput(attrs={"style": "width: 5em", "placeholder": DEFAULT_FEW_RESULTS}),
    )

    def clean(self):
        cleaned = super().clean()
        if cleaned.get("period") == "custom":
            start, end = cleaned.get("start"), cleaned.get("end")
            if start is None or end is None:
                raise forms.ValidationError("Custom dates need both a From and a To date.")
            if start > end:
                raise forms.ValidationError("The From date is after the To date; swap them.")
        return cleaned

    def bounds(self, now: datetime | None = None) -> tuple[datetime, datetime]:
        """[start, end) of the chosen period as aware datetimes; custom dates are whole days in
        the site's time zone, the To date included."""
        now = now or timezone.now()
        period = self.cleaned_data.get("period") or "7d"
        if period != "custom":
            return now - PERIODS[period], now
        zone = timezone.get_current_timezone()
        start = datetime.combine(self.cleaned_data["start"], time.min, tzinfo=zone)
        end = datetime.combine(self.cleaned_data["end"] + timedelta(days=1), time.min, tzinfo=zone)
        return start, end

    @property
    def few_threshold(self) -> int:
        return self.cleaned_data.get("few") or DEFAULT_FEW_RESULTS
