"""Figures and HTML pages: the lab report and the study report."""
