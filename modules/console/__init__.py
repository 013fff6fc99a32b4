"""Console output: progress lines and the plain model summary for log files (`progress`), and library noise filtered
at its source so a clean run prints no warning, traceback or escape code (`quiet`).
"""
