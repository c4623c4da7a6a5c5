"""gavel's Hydra sweeper plugin. It is the one part of gavel outside `gavel.*`: Hydra discovers plugins only in
the `hydra_plugins` namespace and instantiates a sweeper only from a class defined there (its registry is keyed
by the class's own module), and its scan re-executes those modules, so the sweeper cannot live elsewhere and be
re-exported."""
