"""Storage backends behind one interface: ``local`` (directories + loop devices) and
``vsphere`` (pyVmomi). See base.Backend for the contract both pass."""
