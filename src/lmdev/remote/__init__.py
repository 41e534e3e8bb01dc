"""SSH hosts and clusters: the same lmdev environment on a remote machine, over plain SSH.

``hosts`` stores the named remotes, ``ssh`` connects (asyncssh behind a small synchronous
facade), ``bootstrap`` ships lmdev to a host without internet, ``agent`` is what runs on the
remote side, ``sync`` sends a project, ``jobs`` starts and follows detached training, ``pull``
merges remote runs into the local store, ``tunnel`` forwards the dashboard, ``cluster`` checks
and drives several hosts at once.
"""
