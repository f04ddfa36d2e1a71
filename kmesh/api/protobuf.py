"""Decode Kubernetes protobuf request bodies (``application/vnd.kubernetes.protobuf``) to JSON dicts.

kubectl's typed clients (``kubectl create namespace|configmap|deployment|service``,
``kubectl run``, ``kubectl expose`` ...) send their bodies in Kubernetes' protobuf
encoding: the 4-byte magic ``k8s\\x00`` and then a ``runtime.Unknown`` message
whose ``raw`` field holds the object's own message (``k8s.io.api.core.v1.Pod``...).
kmesh stores Kubernetes JSON, so :func:`decode` turns such a body into the dict
the JSON encoding of the same Go object would have given.

The decoder is driven by :data:`SPEC`, a table of the messages kmesh needs, written
as compact strings.  Field numbers come from Kubernetes' ``generated.proto`` files
(``k8s.io/api/{core,apps,discovery,coordination,networking,certificates,autoscaling}/v1`` and
``k8s.io/apimachinery/pkg/apis/meta/v1``).

Go's protobuf marshallers always write non-pointer fields, even when they are
empty, while its JSON encoder drops empty ``omitempty`` fields.  So, to give the
JSON the JSON encoding gives, a zero scalar (``""``, ``0``, ``false``) is dropped
unless the table marks its field ``!`` (a pointer, where zero is a real value,
such as ``replicas: 0``, or a field JSON writes even when empty, such as
``containerPort``).  A nested message present on the wire is always kept, as
``{}`` when empty, as Go's JSON encoder writes non-pointer structs.  An empty
``Time`` is Go's zero time and becomes ``None`` (JSON ``null``).
"""

from __future__ import annotations

import base64
from datetime import datetime, timedelta, timezone
from typing import Any, Iterator, NamedTuple

from kmesh.api import codec

MAGIC = b"k8s\x00"
"""The prefix of every Kubernetes protobuf body."""

CONTENT_TYPE = "application/vnd.kubernetes.protobuf"

# ---------------------------------------------------------------- the table
#
# One entry per message: "N name type, N name type, ...".  A type is
#   s  string      b  bool       i  int32/int64 (varint, two's complement)
#   y  bytes (JSON: base64)      T  meta.v1.Time    M  meta.v1.MicroTime
#   Q  resource.Quantity (a string)                 I  intstr.IntOrString
#   J  a message whose field 1 holds raw JSON (FieldsV1, RawExtension)
#   {x} map<string, x>           or the name of another message in SPEC.
# Suffixes: * repeated, ! keep a zero scalar (pointer or non-omitempty field),
# ^ inline: the nested message's fields are merged into this one (Go's
# `json:",inline"` embedding, such as LocalObjectReference in ConfigMapKeySelector).
# Messages of other API groups are prefixed: apps., discovery., coordination.,
# autoscaling., meta. (only where a core name would clash).

SPEC: dict[str, str] = {
    # ---- k8s.io/apimachinery/pkg/apis/meta/v1
    "ObjectMeta": (
        "1 name s, 2 generateName s, 3 namespace s, 4 selfLink s, 5 uid s, 6 resourceVersion s,"
        " 7 generation i, 8 creationTimestamp T, 9 deletionTimestamp T,"
        " 10 deletionGracePeriodSeconds i!, 11 labels {s}, 12 annotations {s},"
        " 13 ownerReferences OwnerReference*, 14 finalizers s*, 17 managedFields ManagedFieldsEntry*"
    ),
    "OwnerReference": (
        "5 apiVersion s!, 1 kind s!, 3 name s!, 4 uid s!, 6 controller b!, 7 blockOwnerDeletion b!"
    ),
    "ManagedFieldsEntry": (
        "1 manager s, 2 operation s, 3 apiVersion s, 4 time T, 6 fieldsType s, 7 fieldsV1 J,"
        " 8 subresource s"
    ),
    "LabelSelector": "1 matchLabels {s}, 2 matchExpressions LabelSelectorRequirement*",
    "LabelSelectorRequirement": "1 key s!, 2 operator s!, 3 values s*",
    "Condition": (
        "1 type s!, 2 status s!, 3 observedGeneration i, 4 lastTransitionTime T, 5 reason s!,"
        " 6 message s!"
    ),
    "meta.DeleteOptions": (
        "1 gracePeriodSeconds i!, 2 preconditions meta.Preconditions, 3 orphanDependents b!,"
        " 4 propagationPolicy s!, 5 dryRun s*"
    ),
    "meta.Preconditions": "1 uid s!, 2 resourceVersion s!",
    # ---- k8s.io/api/core/v1: the kinds
    "Namespace": "1 metadata ObjectMeta, 2 spec NamespaceSpec, 3 status NamespaceStatus",
    "NamespaceSpec": "1 finalizers s*",
    "NamespaceStatus": "1 phase s, 2 conditions NamespaceCondition*",
    "NamespaceCondition": (
        "1 type s!, 2 status s!, 4 lastTransitionTime T, 5 reason s, 6 message s"
    ),
    "ConfigMap": "1 metadata ObjectMeta, 4 immutable b!, 2 data {s}, 3 binaryData {y}",
    "Secret": (
        "1 metadata ObjectMeta, 5 immutable b!, 2 data {y}, 4 stringData {s}, 3 type s"
    ),
    "ServiceAccount": (
        "1 metadata ObjectMeta, 2 secrets ObjectReference*, 3 imagePullSecrets LocalObjectReference*,"
        " 4 automountServiceAccountToken b!"
    ),
    "Binding": "1 metadata ObjectMeta, 2 target ObjectReference",
    "ObjectReference": (
        "1 kind s, 2 namespace s, 3 name s, 4 uid s, 5 apiVersion s, 6 resourceVersion s, 7 fieldPath s"
    ),
    "LocalObjectReference": "1 name s",
    "TypedLocalObjectReference": "1 apiGroup s, 2 kind s!, 3 name s!",
    "Event": (
        "1 metadata ObjectMeta, 2 involvedObject ObjectReference, 3 reason s, 4 message s,"
        " 5 source EventSource, 6 firstTimestamp T, 7 lastTimestamp T, 8 count i, 9 type s,"
        " 10 eventTime M, 11 series EventSeries, 12 action s, 13 related ObjectReference,"
        " 14 reportingComponent s!, 15 reportingInstance s!"
    ),
    "EventSeries": "1 count i, 2 lastObservedTime M",
    "EventSource": "1 component s, 2 host s",
    "Endpoints": "1 metadata ObjectMeta, 2 subsets EndpointSubset*",
    "EndpointSubset": (
        "1 addresses EndpointAddress*, 2 notReadyAddresses EndpointAddress*, 3 ports EndpointPort*"
    ),
    "EndpointAddress": "1 ip s!, 3 hostname s, 4 nodeName s!, 2 targetRef ObjectReference",
    "EndpointPort": "1 name s, 2 port i!, 3 protocol s, 4 appProtocol s!",
    # ---- Service
    "Service": "1 metadata ObjectMeta, 2 spec ServiceSpec, 3 status ServiceStatus",
    "ServiceSpec": (
        "1 ports ServicePort*, 2 selector {s}, 3 clusterIP s, 18 clusterIPs s*, 4 type s,"
        " 5 externalIPs s*, 7 sessionAffinity s, 8 loadBalancerIP s, 9 loadBalancerSourceRanges s*,"
        " 10 externalName s, 11 externalTrafficPolicy s, 12 healthCheckNodePort i,"
        " 13 publishNotReadyAddresses b, 14 sessionAffinityConfig SessionAffinityConfig,"
        " 19 ipFamilies s*, 17 ipFamilyPolicy s!, 20 allocateLoadBalancerNodePorts b!,"
        " 21 loadBalancerClass s!, 22 internalTrafficPolicy s!, 23 trafficDistribution s!"
    ),
    "ServicePort": (
        "1 name s, 2 protocol s, 6 appProtocol s!, 3 port i!, 4 targetPort I, 5 nodePort i"
    ),
    "SessionAffinityConfig": "1 clientIP ClientIPConfig",
    "ClientIPConfig": "1 timeoutSeconds i!",
    "ServiceStatus": "1 loadBalancer LoadBalancerStatus, 2 conditions Condition*",
    "LoadBalancerStatus": "1 ingress LoadBalancerIngress*",
    "LoadBalancerIngress": "1 ip s, 2 hostname s, 3 ipMode s!, 4 ports PortStatus*",
    "PortStatus": "1 port i!, 2 protocol s!, 3 error s!",
    # ---- Node
    "Node": "1 metadata ObjectMeta, 2 spec NodeSpec, 3 status NodeStatus",
    "NodeSpec": (
        "1 podCIDR s, 7 podCIDRs s*, 3 providerID s, 4 unschedulable b, 5 taints Taint*,"
        " 2 externalID s"
    ),
    "Taint": "1 key s!, 2 value s, 3 effect s!, 4 timeAdded T",
    "NodeStatus": (
        "1 capacity {Q}, 2 allocatable {Q}, 3 phase s, 4 conditions NodeCondition*,"
        " 5 addresses NodeAddress*, 6 daemonEndpoints NodeDaemonEndpoints,"
        " 7 nodeInfo NodeSystemInfo, 8 images ContainerImage*, 9 volumesInUse s*,"
        " 10 volumesAttached AttachedVolume*, 12 runtimeHandlers NodeRuntimeHandler*,"
        " 13 features NodeFeatures, 14 declaredFeatures s*"
    ),
    "NodeCondition": (
        "1 type s!, 2 status s!, 3 lastHeartbeatTime T, 4 lastTransitionTime T, 5 reason s,"
        " 6 message s"
    ),
    "NodeAddress": "1 type s!, 2 address s!",
    "NodeDaemonEndpoints": "1 kubeletEndpoint DaemonEndpoint",
    "DaemonEndpoint": "1 Port i!",
    "NodeSystemInfo": (
        "1 machineID s!, 2 systemUUID s!, 3 bootID s!, 4 kernelVersion s!, 5 osImage s!,"
        " 6 containerRuntimeVersion s!, 7 kubeletVersion s!, 8 kubeProxyVersion s!,"
        " 9 operatingSystem s!, 10 architecture s!, 11 swap NodeSwapStatus"
    ),
    "NodeSwapStatus": "1 capacity i!",
    "ContainerImage": "1 names s*, 2 sizeBytes i",
    "AttachedVolume": "1 name s!, 2 devicePath s!",
    "NodeRuntimeHandler": "1 name s!, 2 features NodeRuntimeHandlerFeatures",
    "NodeRuntimeHandlerFeatures": "1 recursiveReadOnlyMounts b!, 2 userNamespaces b!",
    "NodeFeatures": "1 supplementalGroupsPolicy b!, 2 containerUlimits b!",
    # ---- Pod
    "Pod": "1 metadata ObjectMeta, 2 spec PodSpec, 3 status PodStatus",
    "PodTemplateSpec": "1 metadata ObjectMeta, 2 spec PodSpec",
    "PodSpec": (
        "1 volumes Volume*, 20 initContainers Container*, 2 containers Container*,"
        " 34 ephemeralContainers EphemeralContainer*, 3 restartPolicy s,"
        " 4 terminationGracePeriodSeconds i!, 5 activeDeadlineSeconds i!, 6 dnsPolicy s,"
        " 7 nodeSelector {s}, 8 serviceAccountName s, 9 serviceAccount s,"
        " 21 automountServiceAccountToken b!, 10 nodeName s, 11 hostNetwork b, 12 hostPID b,"
        " 13 hostIPC b, 27 shareProcessNamespace b!, 14 securityContext PodSecurityContext,"
        " 15 imagePullSecrets LocalObjectReference*, 16 hostname s, 17 subdomain s,"
        " 18 affinity Affinity, 19 schedulerName s, 22 tolerations Toleration*,"
        " 23 hostAliases HostAlias*, 24 priorityClassName s, 25 priority i!,"
        " 26 dnsConfig PodDNSConfig, 28 readinessGates PodReadinessGate*, 29 runtimeClassName s!,"
        " 30 enableServiceLinks b!, 31 preemptionPolicy s!, 32 overhead {Q},"
        " 33 topologySpreadConstraints TopologySpreadConstraint*, 35 setHostnameAsFQDN b!,"
        " 36 os PodOS, 37 hostUsers b!, 38 schedulingGates PodSchedulingGate*,"
        " 39 resourceClaims PodResourceClaim*, 40 resources ResourceRequirements,"
        " 41 hostnameOverride s!"
    ),
    "PodOS": "1 name s!",
    "PodReadinessGate": "1 conditionType s!",
    "PodSchedulingGate": "1 name s!",
    "PodResourceClaim": "1 name s!, 3 resourceClaimName s!, 4 resourceClaimTemplateName s!",
    "PodDNSConfig": "1 nameservers s*, 2 searches s*, 3 options PodDNSConfigOption*",
    "PodDNSConfigOption": "1 name s, 2 value s!",
    "HostAlias": "1 ip s!, 2 hostnames s*",
    "Toleration": "1 key s, 2 operator s, 3 value s, 4 effect s, 5 tolerationSeconds i!",
    "TopologySpreadConstraint": (
        "1 maxSkew i!, 2 topologyKey s!, 3 whenUnsatisfiable s!, 4 labelSelector LabelSelector,"
        " 5 minDomains i!, 6 nodeAffinityPolicy s!, 7 nodeTaintsPolicy s!, 8 matchLabelKeys s*"
    ),
    "Affinity": (
        "1 nodeAffinity NodeAffinity, 2 podAffinity PodAffinity, 3 podAntiAffinity PodAffinity"
    ),
    "NodeAffinity": (
        "1 requiredDuringSchedulingIgnoredDuringExecution NodeSelector,"
        " 2 preferredDuringSchedulingIgnoredDuringExecution PreferredSchedulingTerm*"
    ),
    "NodeSelector": "1 nodeSelectorTerms NodeSelectorTerm*",
    "NodeSelectorTerm": (
        "1 matchExpressions NodeSelectorRequirement*, 2 matchFields NodeSelectorRequirement*"
    ),
    "NodeSelectorRequirement": "1 key s!, 2 operator s!, 3 values s*",
    "PreferredSchedulingTerm": "1 weight i!, 2 preference NodeSelectorTerm",
    # PodAntiAffinity has the same two fields as PodAffinity.
    "PodAffinity": (
        "1 requiredDuringSchedulingIgnoredDuringExecution PodAffinityTerm*,"
        " 2 preferredDuringSchedulingIgnoredDuringExecution WeightedPodAffinityTerm*"
    ),
    "PodAffinityTerm": (
        "1 labelSelector LabelSelector, 2 namespaces s*, 3 topologyKey s!,"
        " 4 namespaceSelector LabelSelector, 5 matchLabelKeys s*, 6 mismatchLabelKeys s*"
    ),
    "WeightedPodAffinityTerm": "1 weight i!, 2 podAffinityTerm PodAffinityTerm",
    "PodSecurityContext": (
        "1 seLinuxOptions SELinuxOptions, 8 windowsOptions WindowsSecurityContextOptions,"
        " 2 runAsUser i!, 6 runAsGroup i!, 3 runAsNonRoot b!, 4 supplementalGroups i*,"
        " 12 supplementalGroupsPolicy s!, 5 fsGroup i!, 7 sysctls Sysctl*,"
        " 9 fsGroupChangePolicy s!, 10 seccompProfile SeccompProfile,"
        " 11 appArmorProfile AppArmorProfile, 13 seLinuxChangePolicy s!"
    ),
    "SecurityContext": (
        "1 capabilities Capabilities, 2 privileged b!, 3 seLinuxOptions SELinuxOptions,"
        " 10 windowsOptions WindowsSecurityContextOptions, 4 runAsUser i!, 8 runAsGroup i!,"
        " 5 runAsNonRoot b!, 6 readOnlyRootFilesystem b!, 7 allowPrivilegeEscalation b!,"
        " 9 procMount s!, 11 seccompProfile SeccompProfile, 12 appArmorProfile AppArmorProfile"
    ),
    "Capabilities": "1 add s*, 2 drop s*",
    "SELinuxOptions": "1 user s, 2 role s, 3 type s, 4 level s",
    "WindowsSecurityContextOptions": (
        "1 gmsaCredentialSpecName s!, 2 gmsaCredentialSpec s!, 3 runAsUserName s!, 4 hostProcess b!"
    ),
    "SeccompProfile": "1 type s!, 2 localhostProfile s!",
    "AppArmorProfile": "1 type s!, 2 localhostProfile s!",
    "Sysctl": "1 name s!, 2 value s!",
    # ---- Container
    "Container": (
        "1 name s!, 2 image s, 3 command s*, 4 args s*, 5 workingDir s, 6 ports ContainerPort*,"
        " 19 envFrom EnvFromSource*, 7 env EnvVar*, 8 resources ResourceRequirements,"
        " 23 resizePolicy ContainerResizePolicy*, 24 restartPolicy s!,"
        " 9 volumeMounts VolumeMount*, 21 volumeDevices VolumeDevice*, 10 livenessProbe Probe,"
        " 11 readinessProbe Probe, 22 startupProbe Probe, 12 lifecycle Lifecycle,"
        " 13 terminationMessagePath s, 20 terminationMessagePolicy s, 14 imagePullPolicy s,"
        " 15 securityContext SecurityContext, 16 stdin b, 17 stdinOnce b, 18 tty b"
    ),
    "EphemeralContainer": "1 ephemeralContainerCommon Container^, 2 targetContainerName s",
    "ContainerPort": "1 name s, 2 hostPort i, 3 containerPort i!, 4 protocol s, 5 hostIP s",
    "ContainerResizePolicy": "1 resourceName s!, 2 restartPolicy s!",
    "EnvVar": "1 name s!, 2 value s, 3 valueFrom EnvVarSource",
    "EnvVarSource": (
        "1 fieldRef ObjectFieldSelector, 2 resourceFieldRef ResourceFieldSelector,"
        " 3 configMapKeyRef ConfigMapKeySelector, 4 secretKeyRef SecretKeySelector,"
        " 5 fileKeyRef FileKeySelector"
    ),
    "ObjectFieldSelector": "1 apiVersion s, 2 fieldPath s!",
    "ResourceFieldSelector": "1 containerName s, 2 resource s!, 3 divisor Q",
    "ConfigMapKeySelector": "1 localObjectReference LocalObjectReference^, 2 key s!, 3 optional b!",
    "SecretKeySelector": "1 localObjectReference LocalObjectReference^, 2 key s!, 3 optional b!",
    "FileKeySelector": "1 volumeName s!, 2 path s!, 3 key s!, 4 optional b!",
    "EnvFromSource": "1 prefix s, 2 configMapRef ConfigMapEnvSource, 3 secretRef SecretEnvSource",
    "ConfigMapEnvSource": "1 localObjectReference LocalObjectReference^, 2 optional b!",
    "SecretEnvSource": "1 localObjectReference LocalObjectReference^, 2 optional b!",
    "ResourceRequirements": "1 limits {Q}, 2 requests {Q}, 3 claims ResourceClaim*",
    "ResourceClaim": "1 name s!, 2 request s",
    "VolumeMount": (
        "1 name s!, 2 readOnly b, 7 recursiveReadOnly s!, 3 mountPath s!, 4 subPath s,"
        " 5 mountPropagation s!, 6 subPathExpr s"
    ),
    "VolumeDevice": "1 name s!, 2 devicePath s!",
    "Probe": (
        "1 handler ProbeHandler^, 2 initialDelaySeconds i, 3 timeoutSeconds i, 4 periodSeconds i,"
        " 5 successThreshold i, 6 failureThreshold i, 7 terminationGracePeriodSeconds i!"
    ),
    "ProbeHandler": (
        "1 exec ExecAction, 2 httpGet HTTPGetAction, 3 tcpSocket TCPSocketAction, 4 grpc GRPCAction"
    ),
    "Lifecycle": "1 postStart LifecycleHandler, 2 preStop LifecycleHandler, 3 stopSignal s!",
    "LifecycleHandler": (
        "1 exec ExecAction, 2 httpGet HTTPGetAction, 3 tcpSocket TCPSocketAction, 4 sleep SleepAction"
    ),
    "ExecAction": "1 command s*",
    "HTTPGetAction": "1 path s, 2 port I, 3 host s, 4 scheme s, 5 httpHeaders HTTPHeader*",
    "HTTPHeader": "1 name s!, 2 value s!",
    "TCPSocketAction": "1 port I, 2 host s",
    "GRPCAction": "1 port i!, 2 service s!",
    "SleepAction": "1 seconds i!",
    # ---- volumes
    "Volume": "1 name s!, 2 volumeSource VolumeSource^",
    "VolumeSource": (
        "1 hostPath HostPathVolumeSource, 2 emptyDir EmptyDirVolumeSource,"
        " 6 secret SecretVolumeSource, 7 nfs NFSVolumeSource,"
        " 10 persistentVolumeClaim PersistentVolumeClaimVolumeSource,"
        " 16 downwardAPI DownwardAPIVolumeSource, 19 configMap ConfigMapVolumeSource,"
        " 26 projected ProjectedVolumeSource, 28 csi CSIVolumeSource, 30 image ImageVolumeSource"
    ),
    "HostPathVolumeSource": "1 path s!, 2 type s!",
    "EmptyDirVolumeSource": "1 medium s, 2 sizeLimit Q",
    "SecretVolumeSource": "1 secretName s, 2 items KeyToPath*, 3 defaultMode i!, 4 optional b!",
    "ConfigMapVolumeSource": (
        "1 localObjectReference LocalObjectReference^, 2 items KeyToPath*, 3 defaultMode i!,"
        " 4 optional b!"
    ),
    "KeyToPath": "1 key s!, 2 path s!, 3 mode i!",
    "NFSVolumeSource": "1 server s!, 2 path s!, 3 readOnly b",
    "PersistentVolumeClaimVolumeSource": "1 claimName s!, 2 readOnly b",
    "DownwardAPIVolumeSource": "1 items DownwardAPIVolumeFile*, 2 defaultMode i!",
    "DownwardAPIVolumeFile": (
        "1 path s!, 2 fieldRef ObjectFieldSelector, 3 resourceFieldRef ResourceFieldSelector,"
        " 4 mode i!"
    ),
    "ProjectedVolumeSource": "1 sources VolumeProjection*, 2 defaultMode i!",
    "VolumeProjection": (
        "1 secret SecretProjection, 2 downwardAPI DownwardAPIProjection,"
        " 3 configMap ConfigMapProjection, 4 serviceAccountToken ServiceAccountTokenProjection"
    ),
    "SecretProjection": (
        "1 localObjectReference LocalObjectReference^, 2 items KeyToPath*, 4 optional b!"
    ),
    "ConfigMapProjection": (
        "1 localObjectReference LocalObjectReference^, 2 items KeyToPath*, 4 optional b!"
    ),
    "DownwardAPIProjection": "1 items DownwardAPIVolumeFile*",
    "ServiceAccountTokenProjection": "1 audience s, 2 expirationSeconds i!, 3 path s!",
    "CSIVolumeSource": (
        "1 driver s!, 2 readOnly b!, 3 fsType s!, 4 volumeAttributes {s},"
        " 5 nodePublishSecretRef LocalObjectReference"
    ),
    "ImageVolumeSource": "1 reference s, 2 pullPolicy s",
    # ---- Pod status
    "PodStatus": (
        "17 observedGeneration i, 1 phase s, 2 conditions PodCondition*, 3 message s, 4 reason s,"
        " 11 nominatedNodeName s, 5 hostIP s, 16 hostIPs HostIP*, 6 podIP s, 12 podIPs PodIP*,"
        " 7 startTime T, 10 initContainerStatuses ContainerStatus*,"
        " 8 containerStatuses ContainerStatus*, 9 qosClass s,"
        " 13 ephemeralContainerStatuses ContainerStatus*, 14 resize s"
    ),
    "PodCondition": (
        "1 type s!, 7 observedGeneration i, 2 status s!, 3 lastProbeTime T,"
        " 4 lastTransitionTime T, 5 reason s, 6 message s"
    ),
    "HostIP": "1 ip s!",
    "PodIP": "1 ip s!",
    "ContainerStatus": (
        "1 name s!, 2 state ContainerState, 3 lastState ContainerState, 4 ready b!,"
        " 5 restartCount i!, 6 image s!, 7 imageID s!, 8 containerID s, 9 started b!,"
        " 10 allocatedResources {Q}, 11 resources ResourceRequirements, 15 stopSignal s!"
    ),
    "ContainerState": (
        "1 waiting ContainerStateWaiting, 2 running ContainerStateRunning,"
        " 3 terminated ContainerStateTerminated"
    ),
    "ContainerStateWaiting": "1 reason s, 2 message s",
    "ContainerStateRunning": "1 startedAt T",
    "ContainerStateTerminated": (
        "1 exitCode i!, 2 signal i, 3 reason s, 4 message s, 5 startedAt T, 6 finishedAt T,"
        " 7 containerID s"
    ),
    # ---- k8s.io/api/apps/v1
    "apps.Deployment": (
        "1 metadata ObjectMeta, 2 spec apps.DeploymentSpec, 3 status apps.DeploymentStatus"
    ),
    "apps.DeploymentSpec": (
        "1 replicas i!, 2 selector LabelSelector, 3 template PodTemplateSpec,"
        " 4 strategy apps.DeploymentStrategy, 5 minReadySeconds i, 6 revisionHistoryLimit i!,"
        " 7 paused b, 9 progressDeadlineSeconds i!, 10 podReplacementPolicy s!"
    ),
    "apps.DeploymentStrategy": "1 type s, 2 rollingUpdate apps.RollingUpdateDeployment",
    "apps.RollingUpdateDeployment": "1 maxUnavailable I, 2 maxSurge I",
    "apps.DeploymentStatus": (
        "1 observedGeneration i, 2 replicas i, 3 updatedReplicas i, 7 readyReplicas i,"
        " 4 availableReplicas i, 5 unavailableReplicas i, 9 terminatingReplicas i!,"
        " 6 conditions apps.DeploymentCondition*, 8 collisionCount i!"
    ),
    "apps.DeploymentCondition": (
        "1 type s!, 2 status s!, 6 lastUpdateTime T, 7 lastTransitionTime T, 4 reason s,"
        " 5 message s"
    ),
    "apps.ReplicaSet": (
        "1 metadata ObjectMeta, 2 spec apps.ReplicaSetSpec, 3 status apps.ReplicaSetStatus"
    ),
    "apps.ReplicaSetSpec": (
        "1 replicas i!, 4 minReadySeconds i, 2 selector LabelSelector, 3 template PodTemplateSpec"
    ),
    "apps.ReplicaSetStatus": (
        "1 replicas i!, 2 fullyLabeledReplicas i, 4 readyReplicas i, 5 availableReplicas i,"
        " 7 terminatingReplicas i!, 3 observedGeneration i, 6 conditions apps.ReplicaSetCondition*"
    ),
    "apps.ReplicaSetCondition": (
        "1 type s!, 2 status s!, 3 lastTransitionTime T, 4 reason s, 5 message s"
    ),
    # ---- k8s.io/api/discovery/v1
    "discovery.EndpointSlice": (
        "1 metadata ObjectMeta, 4 addressType s!, 2 endpoints discovery.Endpoint*,"
        " 3 ports discovery.EndpointPort*"
    ),
    "discovery.Endpoint": (
        "1 addresses s*, 2 conditions discovery.EndpointConditions, 3 hostname s!,"
        " 4 targetRef ObjectReference, 5 deprecatedTopology {s}, 6 nodeName s!, 7 zone s!,"
        " 8 hints discovery.EndpointHints"
    ),
    "discovery.EndpointConditions": "1 ready b!, 2 serving b!, 3 terminating b!",
    "discovery.EndpointHints": "1 forZones discovery.ForZone*",
    "discovery.ForZone": "1 name s!",
    "discovery.EndpointPort": "1 name s!, 2 protocol s!, 3 port i!, 4 appProtocol s!",
    # ---- k8s.io/api/coordination/v1
    "coordination.Lease": "1 metadata ObjectMeta, 2 spec coordination.LeaseSpec",
    "coordination.LeaseSpec": (
        "1 holderIdentity s!, 2 leaseDurationSeconds i!, 3 acquireTime M, 4 renewTime M,"
        " 5 leaseTransitions i!, 6 strategy s!, 7 preferredHolder s!"
    ),
    # ---- k8s.io/api/networking/v1 (``kubectl create ingress|ingressclass`` send these)
    "networking.Ingress": (
        "1 metadata ObjectMeta, 2 spec networking.IngressSpec, 3 status networking.IngressStatus"
    ),
    "networking.IngressSpec": (
        "4 ingressClassName s, 1 defaultBackend networking.IngressBackend, 2 tls networking.IngressTLS*,"
        " 3 rules networking.IngressRule*"
    ),
    "networking.IngressBackend": (
        "4 service networking.IngressServiceBackend, 3 resource TypedLocalObjectReference"
    ),
    "networking.IngressServiceBackend": "1 name s!, 2 port networking.ServiceBackendPort",
    "networking.ServiceBackendPort": "1 name s, 2 number i",
    "networking.IngressTLS": "1 hosts s*, 2 secretName s",
    "networking.IngressRule": "1 host s, 2 ingressRuleValue networking.IngressRuleValue^",
    "networking.IngressRuleValue": "1 http networking.HTTPIngressRuleValue",
    "networking.HTTPIngressRuleValue": "1 paths networking.HTTPIngressPath*",
    "networking.HTTPIngressPath": "1 path s, 3 pathType s, 2 backend networking.IngressBackend",
    "networking.IngressStatus": "1 loadBalancer networking.IngressLoadBalancerStatus",
    "networking.IngressLoadBalancerStatus": "1 ingress networking.IngressLoadBalancerIngress*",
    "networking.IngressLoadBalancerIngress": "1 ip s, 2 hostname s, 4 ports networking.IngressPortStatus*",
    "networking.IngressPortStatus": "1 port i!, 2 protocol s!, 3 error s",
    "networking.IngressClass": "1 metadata ObjectMeta, 2 spec networking.IngressClassSpec",
    "networking.IngressClassSpec": "1 controller s, 2 parameters networking.IngressClassParametersReference",
    "networking.IngressClassParametersReference": (
        "1 apiGroup s, 2 kind s!, 3 name s!, 4 scope s, 5 namespace s"
    ),
    # ---- NetworkPolicy. protocol and endPort are pointers, and cidr is written even when empty.
    "networking.NetworkPolicy": "1 metadata ObjectMeta, 2 spec networking.NetworkPolicySpec",
    "networking.NetworkPolicySpec": (
        "1 podSelector LabelSelector, 2 ingress networking.NetworkPolicyIngressRule*,"
        " 3 egress networking.NetworkPolicyEgressRule*, 4 policyTypes s*"
    ),
    "networking.NetworkPolicyIngressRule": (
        "1 ports networking.NetworkPolicyPort*, 2 from networking.NetworkPolicyPeer*"
    ),
    "networking.NetworkPolicyEgressRule": "1 ports networking.NetworkPolicyPort*, 2 to networking.NetworkPolicyPeer*",
    "networking.NetworkPolicyPeer": (
        "1 podSelector LabelSelector, 2 namespaceSelector LabelSelector, 3 ipBlock networking.IPBlock"
    ),
    "networking.NetworkPolicyPort": "1 protocol s!, 2 port I, 3 endPort i!",
    "networking.IPBlock": "1 cidr s!, 2 except s*",
    # ---- k8s.io/api/certificates/v1 (``kubectl certificate approve|deny`` send these). ``spec.extra`` is left
    # out: its values are ExtraValue messages where JSON has lists, and kmesh's users carry no extra.
    "certificates.CertificateSigningRequest": (
        "1 metadata ObjectMeta, 2 spec certificates.CertificateSigningRequestSpec,"
        " 3 status certificates.CertificateSigningRequestStatus"
    ),
    "certificates.CertificateSigningRequestSpec": (
        "1 request y, 7 signerName s, 8 expirationSeconds i!, 5 usages s*, 2 username s, 3 uid s, 4 groups s*"
    ),
    "certificates.CertificateSigningRequestStatus": (
        "1 conditions certificates.CertificateSigningRequestCondition*, 2 certificate y"
    ),
    "certificates.CertificateSigningRequestCondition": (
        "1 type s!, 6 status s!, 2 reason s, 3 message s, 4 lastUpdateTime T, 5 lastTransitionTime T"
    ),
    # ---- k8s.io/api/autoscaling/v1.  ScaleSpec.replicas is `omitempty` in Go, but
    # a scale to 0 must stay 0 here, so it keeps its zero.
    "autoscaling.Scale": (
        "1 metadata ObjectMeta, 2 spec autoscaling.ScaleSpec, 3 status autoscaling.ScaleStatus"
    ),
    "autoscaling.ScaleSpec": "1 replicas i!",
    "autoscaling.ScaleStatus": "1 replicas i!, 2 selector s",
}

# (API group, kind) -> the root message of an object of that kind.
ROOTS: dict[tuple[str, str], str] = {
    ("", "Namespace"): "Namespace",
    ("", "Node"): "Node",
    ("", "Pod"): "Pod",
    ("", "Service"): "Service",
    ("", "Endpoints"): "Endpoints",
    ("", "ConfigMap"): "ConfigMap",
    ("", "Secret"): "Secret",
    ("", "ServiceAccount"): "ServiceAccount",
    ("", "Event"): "Event",
    ("", "Binding"): "Binding",
    ("apps", "Deployment"): "apps.Deployment",
    ("apps", "ReplicaSet"): "apps.ReplicaSet",
    ("discovery.k8s.io", "EndpointSlice"): "discovery.EndpointSlice",
    ("coordination.k8s.io", "Lease"): "coordination.Lease",
    ("networking.k8s.io", "Ingress"): "networking.Ingress",
    ("networking.k8s.io", "IngressClass"): "networking.IngressClass",
    ("networking.k8s.io", "NetworkPolicy"): "networking.NetworkPolicy",
    ("certificates.k8s.io", "CertificateSigningRequest"): "certificates.CertificateSigningRequest",
    ("autoscaling", "Scale"): "autoscaling.Scale",
}
"""Which message decodes a body of each (group, kind); DeleteOptions is accepted in any group.

Kinds upstream serves as CRDs (the Gateway API) have no protobuf form: clients send them as JSON."""

_SCALARS = frozenset("sbiy")
_SPECIALS = frozenset("TMQIJ")


class Field(NamedTuple):
    """One field of a message: its JSON name and how to decode it."""

    name: str
    kind: str  # a scalar or special letter, or a message name
    repeated: bool = False
    map: bool = False
    keep_zero: bool = False
    inline: bool = False


def _parse_spec(spec: dict[str, str]) -> dict[str, dict[int, Field]]:
    """Turn :data:`SPEC`'s strings into ``{message: {number: Field}}``, checking references."""
    table: dict[str, dict[int, Field]] = {}
    for message, text in spec.items():
        fields: dict[int, Field] = {}
        for item in text.split(","):
            num_s, name, typ = item.split()
            flags = ""
            while typ[-1] in "*!^":
                flags += typ[-1]
                typ = typ[:-1]
            is_map = typ.startswith("{")
            if is_map:
                typ = typ[1:-1]
            num = int(num_s)
            if num in fields:
                raise AssertionError(f"{message}: field {num} twice")
            fields[num] = Field(name, typ, "*" in flags, is_map, "!" in flags, "^" in flags)
        table[message] = fields
    for message, fields in table.items():
        for f in fields.values():
            if len(f.kind) > 1 and f.kind not in table:
                raise AssertionError(f"{message}.{f.name}: unknown message {f.kind}")
    return table


MESSAGES: dict[str, dict[int, Field]] = _parse_spec(SPEC)
"""The parsed table: message name -> field number -> :class:`Field`."""

# ---------------------------------------------------------------- the wire

_VARINT, _FIXED64, _BYTES, _FIXED32 = 0, 1, 2, 5


def read_varint(data: bytes, pos: int) -> tuple[int, int]:
    """Read a base-128 varint at ``pos``: (unsigned value, next position)."""
    value = shift = 0
    while True:
        if pos >= len(data):
            raise ValueError("truncated protobuf: varint runs past the end of the data")
        b = data[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos
        shift += 7
        if shift >= 70:
            raise ValueError("malformed protobuf: varint longer than 10 bytes")


def wire_fields(data: bytes) -> Iterator[tuple[int, int, Any]]:
    """Yield (field number, wire type, value) for each field of one message.

    The value is an int for varint and fixed fields, ``bytes`` for length-delimited ones.
    """
    pos, end = 0, len(data)
    while pos < end:
        key, pos = read_varint(data, pos)
        num, wire = key >> 3, key & 7
        if num == 0:
            raise ValueError("malformed protobuf: field number 0")
        if wire == _VARINT:
            value, pos = read_varint(data, pos)
        elif wire == _BYTES:
            length, pos = read_varint(data, pos)
            if pos + length > end:
                raise ValueError(f"truncated protobuf: field {num} wants {length} bytes, "
                                 f"{end - pos} left")
            value, pos = data[pos:pos + length], pos + length
        elif wire in (_FIXED64, _FIXED32):
            size = 8 if wire == _FIXED64 else 4
            if pos + size > end:
                raise ValueError(f"truncated protobuf: fixed-size field {num} runs past the end")
            value, pos = int.from_bytes(data[pos:pos + size], "little"), pos + size
        else:
            raise ValueError(f"malformed protobuf: field {num} has unsupported wire type {wire}")
        yield num, wire, value


def _signed(value: int) -> int:
    """A varint read as a two's-complement int64 (negative int32s are sign-extended on the wire)."""
    value &= (1 << 64) - 1
    return value - (1 << 64) if value >= 1 << 63 else value


def _text(raw: bytes) -> str:
    """A protobuf string; invalid UTF-8 is replaced, as Go's JSON encoder does."""
    return raw.decode("utf-8", errors="replace")


# ---------------------------------------------------------------- special messages

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def _timestamp(raw: bytes, micro: bool) -> str | None:
    """meta.v1.Time / MicroTime {seconds=1, nanos=2} as Kubernetes' RFC 3339 string.

    An empty message is Go's zero time, which JSON writes as ``null``.
    """
    if not raw:
        return None
    seconds = nanos = 0
    for num, wire, value in wire_fields(raw):
        if wire != _VARINT:
            continue
        if num == 1:
            seconds = _signed(value)
        elif num == 2:
            nanos = _signed(value)
    try:
        when = _EPOCH + timedelta(seconds=seconds, microseconds=nanos // 1000)
    except OverflowError:
        raise ValueError(f"protobuf time out of range: {seconds} seconds") from None
    # Formatted by hand: strftime's %Y does not zero-pad years before 1000.
    text = (f"{when.year:04d}-{when.month:02d}-{when.day:02d}"
            f"T{when.hour:02d}:{when.minute:02d}:{when.second:02d}")
    return f"{text}.{when.microsecond:06d}Z" if micro else f"{text}Z"


def _quantity(raw: bytes) -> str:
    """resource.Quantity {string=1} as its string; an empty one is ``"0"``, Go's zero Quantity."""
    text = ""
    for num, wire, value in wire_fields(raw):
        if num == 1 and wire == _BYTES:
            text = _text(value)
    return text or "0"


def _int_or_string(raw: bytes) -> int | str:
    """intstr.IntOrString {type=1, intVal=2, strVal=3} as a plain int or string."""
    typ, int_val, str_val = 0, 0, ""
    for num, wire, value in wire_fields(raw):
        if num == 1 and wire == _VARINT:
            typ = _signed(value)
        elif num == 2 and wire == _VARINT:
            int_val = _signed(value)
        elif num == 3 and wire == _BYTES:
            str_val = _text(value)
    return str_val if typ == 1 else int_val


def _raw_json(raw: bytes) -> Any:
    """FieldsV1 / RawExtension {raw=1}: the JSON document the raw bytes hold."""
    doc = b""
    for num, wire, value in wire_fields(raw):
        if num == 1 and wire == _BYTES:
            doc = value
    if not doc:
        return {}
    try:
        return codec.loads_json(doc)
    except (ValueError, RecursionError) as exc:
        raise ValueError(f"protobuf raw JSON field is not JSON: {exc}") from None


_SPECIAL_DECODERS = {
    "T": lambda raw: _timestamp(raw, micro=False),
    "M": lambda raw: _timestamp(raw, micro=True),
    "Q": _quantity,
    "I": _int_or_string,
    "J": _raw_json,
}

# ---------------------------------------------------------------- messages


def _scalar(kind: str, wire: int, value: Any, where: str) -> Any:
    """One scalar value of ``kind`` from a field read with wire type ``wire``."""
    if kind in "bi":
        if wire != _VARINT:
            raise ValueError(f"protobuf field {where}: expected a varint, got wire type {wire}")
        return bool(value) if kind == "b" else _signed(value)
    if wire != _BYTES:
        raise ValueError(f"protobuf field {where}: expected bytes, got wire type {wire}")
    if kind == "s":
        return _text(value)
    return base64.b64encode(value).decode("ascii")  # "y"


def _value(kind: str, wire: int, value: Any, where: str) -> Any:
    """One value of any kind: a scalar, a special message or a message from the table."""
    if kind in _SCALARS:
        return _scalar(kind, wire, value, where)
    if wire != _BYTES:
        raise ValueError(f"protobuf field {where}: expected a message, got wire type {wire}")
    if kind in _SPECIALS:
        return _SPECIAL_DECODERS[kind](value)
    return decode_message(kind, value)


def _zero(kind: str) -> Any:
    """The value Go gives a map entry whose value is missing on the wire."""
    if kind == "Q":
        return "0"
    if kind in ("s", "y"):
        return ""
    return {}


def _is_zero(value: Any) -> bool:
    """Whether a scalar is its Go zero value (``""``, ``0``, ``false``)."""
    return value == "" or (value is not None and not isinstance(value, (dict, list)) and value == 0)


def decode_message(message: str, data: bytes) -> dict[str, Any]:
    """Decode one message of the table (by its :data:`SPEC` name) to a JSON dict.

    Unknown field numbers are skipped; malformed data raises ``ValueError``.
    """
    fields = MESSAGES.get(message)
    if fields is None:
        raise ValueError(f"no protobuf message {message!r} is known")
    out: dict[str, Any] = {}
    for num, wire, value in wire_fields(data):
        f = fields.get(num)
        if f is None:
            continue
        where = f"{message}.{f.name}"
        if f.map:
            if wire != _BYTES:
                raise ValueError(f"protobuf field {where}: expected a map entry, got wire type {wire}")
            key, item = "", _zero(f.kind)
            for enum, ewire, evalue in wire_fields(value):
                if enum == 1:
                    key = _scalar("s", ewire, evalue, where + " key")
                elif enum == 2:
                    item = _value(f.kind, ewire, evalue, where + "[" + key + "]")
            out.setdefault(f.name, {})[key] = item
        elif f.repeated:
            if f.kind in "bi" and wire == _BYTES:  # packed; an empty run adds nothing, as in Go
                pos = 0
                while pos < len(value):
                    v, pos = read_varint(value, pos)
                    out.setdefault(f.name, []).append(bool(v) if f.kind == "b" else _signed(v))
            else:
                out.setdefault(f.name, []).append(_value(f.kind, wire, value, where))
        elif f.inline:
            out.update(_value(f.kind, wire, value, where))
        else:
            v = _value(f.kind, wire, value, where)
            if f.kind in _SCALARS and not f.keep_zero and _is_zero(v):
                out.pop(f.name, None)
            elif isinstance(v, dict) and isinstance(out.get(f.name), dict):
                out[f.name].update(v)  # a repeated occurrence of a message merges into it
            else:
                out[f.name] = v
    return out


# ---------------------------------------------------------------- the envelope


def _root(api_version: str, kind: str) -> str:
    """The table message of an object of ``apiVersion``/``kind``; ValueError if unknown."""
    group = api_version.rpartition("/")[0] if "/" in api_version else ""
    if kind == "DeleteOptions":
        return "meta.DeleteOptions"
    root = ROOTS.get((group, kind))
    if root is None:
        shown = f"{api_version}, Kind={kind}" if api_version or kind else "an object without a kind"
        raise ValueError(f"no protobuf decoder for {shown}")
    return root


def unwrap(body: bytes) -> tuple[str, str, bytes, str]:
    """Split a Kubernetes protobuf body into (apiVersion, kind, raw object bytes, contentType)."""
    if not isinstance(body, (bytes, bytearray, memoryview)):
        raise ValueError("a protobuf body must be bytes")
    body = bytes(body)
    if body[:4] != MAGIC:
        raise ValueError("not a Kubernetes protobuf body: it does not start with the magic 'k8s\\x00'")
    api_version = kind = content_type = encoding = ""
    raw = b""
    for num, wire, value in wire_fields(body[4:]):
        if wire != _BYTES:
            continue
        if num == 1:
            for tnum, twire, tvalue in wire_fields(value):
                if tnum == 1 and twire == _BYTES:
                    api_version = _text(tvalue)
                elif tnum == 2 and twire == _BYTES:
                    kind = _text(tvalue)
        elif num == 2:
            raw = value
        elif num == 3:
            encoding = _text(value)
        elif num == 4:
            content_type = _text(value)
    if encoding:
        raise ValueError(f"unsupported protobuf content encoding {encoding!r}")
    return api_version, kind, raw, content_type


def decode(body: bytes) -> dict[str, Any]:
    """Decode a ``application/vnd.kubernetes.protobuf`` request body to Kubernetes JSON.

    The result carries ``apiVersion`` and ``kind`` from the envelope's TypeMeta.
    Raises ``ValueError`` for a bad magic, truncated or malformed data, or a kind
    this module has no table for.
    """
    api_version, kind, raw, content_type = unwrap(body)
    if content_type and content_type.split(";")[0].strip() == "application/json":
        try:
            obj = codec.loads_json(raw or b"null")
        except (ValueError, RecursionError) as exc:
            raise ValueError(f"protobuf envelope holds bad JSON: {exc}") from None
        if not isinstance(obj, dict):
            raise ValueError("protobuf envelope holds JSON that is not an object")
        obj.setdefault("apiVersion", api_version)
        obj.setdefault("kind", kind)
        return obj
    if content_type and content_type.split(";")[0].strip() != CONTENT_TYPE:
        raise ValueError(f"unsupported protobuf envelope content type {content_type!r}")
    root = _root(api_version, kind)
    return {"apiVersion": api_version, "kind": kind, **decode_message(root, raw)}
