"""The lab network: namespaces, links, hosts, the ISP box."""
