"""The parts of the vsphere backend: session, task waiting, fault translation, device specs
(pure) and datastore file access. ``backends/vsphere.py`` wires them into the Backend."""
