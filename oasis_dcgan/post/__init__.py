"""The postprocess job: metrics, figures, the progress GIF and the report."""
