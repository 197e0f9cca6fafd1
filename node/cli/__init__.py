"""What a person types: the ``swarm`` command and the one-machine swarm (``swarm demo``).

The top room: it assembles the others and holds no training or network logic of its own.

Map of this package:

    main.py        the ``swarm`` command: join, ctl, demo; hands coordinator, sim, plan, bench on (no logic)
    subcommands.py other packages' ``swarm`` commands, found by entry point (``capaswarm.commands``)
    commands.py    ``swarm export | generate | certificate | data``: flags and one-line errors
    preflight.py   ``swarm join --check``: coordinator, manifest, version, reachability, memory, tokens/s
    demo.py        ``swarm demo``: a coordinator and N nodes on 127.0.0.1, progress lines, a JSON report
    launcher.py    the one launcher: ``SwarmLauncher`` (``swarm join`` processes, placed by a hook: prefix,
                   addresses), ``start_coordinator``; used by the demo, the tests and the benchmarks
"""
