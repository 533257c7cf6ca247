"""`resnetctl report`: the paper's tables and figures from the runs in the MLflow store.

Reading (query_sql for database URIs, query_client for tracking servers) yields the same
`RunRecord`s; `tables` turns them into the paper's tables, `figures` into its figures, and
`render` writes both as Markdown, CSV, LaTeX, HTML or JSON.
"""
