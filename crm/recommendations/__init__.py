"""Item-to-item "bought together" recommendations (cross-sell) from order lines.

`services.recommendations_refresh` (nightly task) rebuilds `ProductAffinity` from who bought what;
`selectors.recommendations_for_customer(customer_id, n)` gives a customer's top N products they have
not bought, for message templates and the API.
"""
