"""PREFIX's parts (``benchmarks/prefix_cache.py`` is the entry point and the harness
scenario): ``record`` runs the scripted trajectory on an engine and keeps every root
call's messages; ``server`` starts llama.cpp's server and reads its count of newly
evaluated prompt tokens; ``replay`` sends the recordings to it and judges each call;
``report`` turns the judged calls into the harness's metrics and the per-call table.
"""
