"""Virtual machines for the vm executor: the guest's parts, qemu and virtiofsd command lines."""
