"""recon's pure core: amounts, the comparison and severity table, reports and their JSON.

Nothing here performs I/O, reads a clock or imports an adapter library; every input
(balances, policy, prices, ids, timestamps) is passed in by the caller.
"""
