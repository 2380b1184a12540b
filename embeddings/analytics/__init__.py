"""Search analytics: every search is logged without personal data (what was asked, how, with
which filters, how many results, how long it took) and the products opened from its results;
staff read aggregated reports in the admin; old rows are pruned on a schedule.

- models.py: SearchEvent (one per search) and SearchClick (a product opened from it).
- services.py: search_log_record, search_click_record, search_log_prune (writes).
- selectors.py: the admin report's queries, aggregated in the database (reads).
- middleware.py: records a click when a product page is opened from a result link (`?sid=`);
  the catalog's product page knows nothing about analytics.
- api.py: POST /api/v1/search/clicks/ for storefronts that use the API.
- admin.py: the report page (Embeddings > Search analytics).

No IP address, user, session or uploaded photo is ever stored: a row says what was searched,
not who searched. The search id handed to the client is a random UUID (122 random bits), so a
click can only be attributed by whoever saw the results.
"""
