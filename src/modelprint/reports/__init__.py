"""Reports: a self-contained HTML evaluation report (matplotlib is imported only when one is written)."""

from modelprint.reports.html import embedding_map_2d, write_html_report

__all__ = ["embedding_map_2d", "write_html_report"]
