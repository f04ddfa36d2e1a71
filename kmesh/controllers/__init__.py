"""kmesh's controllers: what kube-controller-manager, kube-scheduler and the Service REST storage do.

- ``service_ips``: ClusterIP / NodePort allocation (API-server admission, repaired at start)
- ``endpoints``: EndpointSlice and Endpoints controllers (``endpoint_model`` holds the pure logic)
- ``replicaset``, ``deployment`` (``deployment_util``): workloads and rollouts
- ``gc``: garbage collection by ownerReferences
- ``scheduler``: binds pending pods to nodes
- ``nodeipam``, ``nodelifecycle``: pod subnets per node, NotReady nodes
- ``manager``: ``ControllerConfig`` and ``run_controllers`` over shared informers (``informers``)
"""
