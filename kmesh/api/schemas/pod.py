"""Field table of the core/v1 Pod kind (Kubernetes v1.32), for ``kubectl explain`` and strict field checking.

Registers ``io.k8s.api.core.v1.Pod`` and every core/v1 struct reachable from it
(spec, containers, probes, security contexts, scheduling, every volume source,
the generic-ephemeral claim template, and status), plus ``PodTemplateSpec`` which
the workload kinds embed. Field names, types and required fields follow the
upstream v1.32 API types; nothing below a field is left unmodelled (no ``ANY``).

Structs of ``io.k8s.apimachinery.pkg.apis.meta.v1`` (ObjectMeta, LabelSelector)
are only referenced here: ``kmesh.api.schemas.meta`` registers them.
"""

from __future__ import annotations

from kmesh.api.fieldschema import (
    BOOL,
    INT32,
    INT64,
    INT_OR_STRING,
    META,
    QUANTITY,
    STRING,
    TIME,
    ListOf,
    MapOf,
    Ref,
    Spec,
    kind,
    refs,
    struct,
)

C = "io.k8s.api.core.v1."
r, meta = refs(C), refs(META)


def s(name: str, fields: dict[str, Spec], required: tuple[str, ...] = ()) -> Ref:
    """Register core/v1 struct ``name``."""
    return struct(C + name, fields, required)


# --- The kind and its template ---

s(
    "Pod",
    {
        "apiVersion": STRING,
        "kind": STRING,
        "metadata": meta("ObjectMeta"),
        "spec": r("PodSpec"),
        "status": r("PodStatus"),
    },
)

s(
    "PodTemplateSpec",
    {
        "metadata": meta("ObjectMeta"),
        "spec": r("PodSpec"),
    },
)


# --- The pod spec and its small parts ---

s(
    "PodSpec",
    {
        "activeDeadlineSeconds": INT64,
        "affinity": r("Affinity"),
        "automountServiceAccountToken": BOOL,
        "containers": ListOf(r("Container")),
        "dnsConfig": r("PodDNSConfig"),
        "dnsPolicy": STRING,
        "enableServiceLinks": BOOL,
        "ephemeralContainers": ListOf(r("EphemeralContainer")),
        "hostAliases": ListOf(r("HostAlias")),
        "hostIPC": BOOL,
        "hostNetwork": BOOL,
        "hostPID": BOOL,
        "hostUsers": BOOL,
        "hostname": STRING,
        "imagePullSecrets": ListOf(r("LocalObjectReference")),
        "initContainers": ListOf(r("Container")),
        "nodeName": STRING,
        "nodeSelector": MapOf(STRING),
        "os": r("PodOS"),
        "overhead": MapOf(QUANTITY),
        "preemptionPolicy": STRING,
        "priority": INT32,
        "priorityClassName": STRING,
        "readinessGates": ListOf(r("PodReadinessGate")),
        "resourceClaims": ListOf(r("PodResourceClaim")),
        "resources": r("ResourceRequirements"),
        "restartPolicy": STRING,
        "runtimeClassName": STRING,
        "schedulerName": STRING,
        "schedulingGates": ListOf(r("PodSchedulingGate")),
        "securityContext": r("PodSecurityContext"),
        "serviceAccount": STRING,
        "serviceAccountName": STRING,
        "setHostnameAsFQDN": BOOL,
        "shareProcessNamespace": BOOL,
        "subdomain": STRING,
        "terminationGracePeriodSeconds": INT64,
        "tolerations": ListOf(r("Toleration")),
        "topologySpreadConstraints": ListOf(r("TopologySpreadConstraint")),
        "volumes": ListOf(r("Volume")),
    },
    required=("containers",),
)

s(
    "PodOS",
    {
        "name": STRING,
    },
    required=("name",),
)

s(
    "PodReadinessGate",
    {
        "conditionType": STRING,
    },
    required=("conditionType",),
)

s(
    "PodSchedulingGate",
    {
        "name": STRING,
    },
    required=("name",),
)

s(
    "PodResourceClaim",
    {
        "name": STRING,
        "resourceClaimName": STRING,
        "resourceClaimTemplateName": STRING,
    },
    required=("name",),
)

s(
    "HostAlias",
    {
        "hostnames": ListOf(STRING),
        "ip": STRING,
    },
    required=("ip",),
)

s(
    "PodDNSConfig",
    {
        "nameservers": ListOf(STRING),
        "options": ListOf(r("PodDNSConfigOption")),
        "searches": ListOf(STRING),
    },
)

s(
    "PodDNSConfigOption",
    {
        "name": STRING,
        "value": STRING,
    },
)

s(
    "LocalObjectReference",
    {
        "name": STRING,
    },
)


# --- Scheduling: affinity, tolerations, topology spread ---

s(
    "Affinity",
    {
        "nodeAffinity": r("NodeAffinity"),
        "podAffinity": r("PodAffinity"),
        "podAntiAffinity": r("PodAntiAffinity"),
    },
)

s(
    "NodeAffinity",
    {
        "preferredDuringSchedulingIgnoredDuringExecution": ListOf(
            r("PreferredSchedulingTerm")
        ),
        "requiredDuringSchedulingIgnoredDuringExecution": r("NodeSelector"),
    },
)

s(
    "NodeSelector",
    {
        "nodeSelectorTerms": ListOf(r("NodeSelectorTerm")),
    },
    required=("nodeSelectorTerms",),
)

s(
    "NodeSelectorTerm",
    {
        "matchExpressions": ListOf(r("NodeSelectorRequirement")),
        "matchFields": ListOf(r("NodeSelectorRequirement")),
    },
)

s(
    "NodeSelectorRequirement",
    {
        "key": STRING,
        "operator": STRING,
        "values": ListOf(STRING),
    },
    required=("key", "operator"),
)

s(
    "PreferredSchedulingTerm",
    {
        "preference": r("NodeSelectorTerm"),
        "weight": INT32,
    },
    required=("preference", "weight"),
)

s(
    "PodAffinity",
    {
        "preferredDuringSchedulingIgnoredDuringExecution": ListOf(
            r("WeightedPodAffinityTerm")
        ),
        "requiredDuringSchedulingIgnoredDuringExecution": ListOf(r("PodAffinityTerm")),
    },
)

s(
    "PodAntiAffinity",
    {
        "preferredDuringSchedulingIgnoredDuringExecution": ListOf(
            r("WeightedPodAffinityTerm")
        ),
        "requiredDuringSchedulingIgnoredDuringExecution": ListOf(r("PodAffinityTerm")),
    },
)

s(
    "PodAffinityTerm",
    {
        "labelSelector": meta("LabelSelector"),
        "matchLabelKeys": ListOf(STRING),
        "mismatchLabelKeys": ListOf(STRING),
        "namespaceSelector": meta("LabelSelector"),
        "namespaces": ListOf(STRING),
        "topologyKey": STRING,
    },
    required=("topologyKey",),
)

s(
    "WeightedPodAffinityTerm",
    {
        "podAffinityTerm": r("PodAffinityTerm"),
        "weight": INT32,
    },
    required=("podAffinityTerm", "weight"),
)

s(
    "Toleration",
    {
        "effect": STRING,
        "key": STRING,
        "operator": STRING,
        "tolerationSeconds": INT64,
        "value": STRING,
    },
)

s(
    "TopologySpreadConstraint",
    {
        "labelSelector": meta("LabelSelector"),
        "matchLabelKeys": ListOf(STRING),
        "maxSkew": INT32,
        "minDomains": INT32,
        "nodeAffinityPolicy": STRING,
        "nodeTaintsPolicy": STRING,
        "topologyKey": STRING,
        "whenUnsatisfiable": STRING,
    },
    required=("maxSkew", "topologyKey", "whenUnsatisfiable"),
)


# --- Containers ---

CONTAINER_FIELDS: dict[str, Spec] = {
    "args": ListOf(STRING),
    "command": ListOf(STRING),
    "env": ListOf(r("EnvVar")),
    "envFrom": ListOf(r("EnvFromSource")),
    "image": STRING,
    "imagePullPolicy": STRING,
    "lifecycle": r("Lifecycle"),
    "livenessProbe": r("Probe"),
    "name": STRING,
    "ports": ListOf(r("ContainerPort")),
    "readinessProbe": r("Probe"),
    "resizePolicy": ListOf(r("ContainerResizePolicy")),
    "resources": r("ResourceRequirements"),
    "restartPolicy": STRING,
    "securityContext": r("SecurityContext"),
    "startupProbe": r("Probe"),
    "stdin": BOOL,
    "stdinOnce": BOOL,
    "terminationMessagePath": STRING,
    "terminationMessagePolicy": STRING,
    "tty": BOOL,
    "volumeDevices": ListOf(r("VolumeDevice")),
    "volumeMounts": ListOf(r("VolumeMount")),
    "workingDir": STRING,
}

s("Container", CONTAINER_FIELDS, required=("name",))

# The same fields as a Container, plus the container whose namespaces it joins.
s("EphemeralContainer", {**CONTAINER_FIELDS, "targetContainerName": STRING}, required=("name",))

s(
    "ContainerPort",
    {
        "containerPort": INT32,
        "hostIP": STRING,
        "hostPort": INT32,
        "name": STRING,
        "protocol": STRING,
    },
    required=("containerPort",),
)

s(
    "ContainerResizePolicy",
    {
        "resourceName": STRING,
        "restartPolicy": STRING,
    },
    required=("resourceName", "restartPolicy"),
)

s(
    "VolumeMount",
    {
        "mountPath": STRING,
        "mountPropagation": STRING,
        "name": STRING,
        "readOnly": BOOL,
        "recursiveReadOnly": STRING,
        "subPath": STRING,
        "subPathExpr": STRING,
    },
    required=("mountPath", "name"),
)

s(
    "VolumeDevice",
    {
        "devicePath": STRING,
        "name": STRING,
    },
    required=("devicePath", "name"),
)


# --- Environment ---

s(
    "EnvVar",
    {
        "name": STRING,
        "value": STRING,
        "valueFrom": r("EnvVarSource"),
    },
    required=("name",),
)

s(
    "EnvVarSource",
    {
        "configMapKeyRef": r("ConfigMapKeySelector"),
        "fieldRef": r("ObjectFieldSelector"),
        "resourceFieldRef": r("ResourceFieldSelector"),
        "secretKeyRef": r("SecretKeySelector"),
    },
)

s(
    "ObjectFieldSelector",
    {
        "apiVersion": STRING,
        "fieldPath": STRING,
    },
    required=("fieldPath",),
)

s(
    "ResourceFieldSelector",
    {
        "containerName": STRING,
        "divisor": QUANTITY,
        "resource": STRING,
    },
    required=("resource",),
)

s(
    "ConfigMapKeySelector",
    {
        "key": STRING,
        "name": STRING,
        "optional": BOOL,
    },
    required=("key",),
)

s(
    "SecretKeySelector",
    {
        "key": STRING,
        "name": STRING,
        "optional": BOOL,
    },
    required=("key",),
)

s(
    "EnvFromSource",
    {
        "configMapRef": r("ConfigMapEnvSource"),
        "prefix": STRING,
        "secretRef": r("SecretEnvSource"),
    },
)

s(
    "ConfigMapEnvSource",
    {
        "name": STRING,
        "optional": BOOL,
    },
)

s(
    "SecretEnvSource",
    {
        "name": STRING,
        "optional": BOOL,
    },
)


# --- Resources ---

s(
    "ResourceRequirements",
    {
        "claims": ListOf(r("ResourceClaim")),
        "limits": MapOf(QUANTITY),
        "requests": MapOf(QUANTITY),
    },
)

s(
    "ResourceClaim",
    {
        "name": STRING,
        "request": STRING,
    },
    required=("name",),
)


# --- Probes and lifecycle hooks ---

s(
    "Probe",
    {
        "exec": r("ExecAction"),
        "failureThreshold": INT32,
        "grpc": r("GRPCAction"),
        "httpGet": r("HTTPGetAction"),
        "initialDelaySeconds": INT32,
        "periodSeconds": INT32,
        "successThreshold": INT32,
        "tcpSocket": r("TCPSocketAction"),
        "terminationGracePeriodSeconds": INT64,
        "timeoutSeconds": INT32,
    },
)

s(
    "Lifecycle",
    {
        "postStart": r("LifecycleHandler"),
        "preStop": r("LifecycleHandler"),
    },
)

s(
    "LifecycleHandler",
    {
        "exec": r("ExecAction"),
        "httpGet": r("HTTPGetAction"),
        "sleep": r("SleepAction"),
        "tcpSocket": r("TCPSocketAction"),
    },
)

s(
    "ExecAction",
    {
        "command": ListOf(STRING),
    },
)

s(
    "HTTPGetAction",
    {
        "host": STRING,
        "httpHeaders": ListOf(r("HTTPHeader")),
        "path": STRING,
        "port": INT_OR_STRING,
        "scheme": STRING,
    },
    required=("port",),
)

s(
    "HTTPHeader",
    {
        "name": STRING,
        "value": STRING,
    },
    required=("name", "value"),
)

s(
    "TCPSocketAction",
    {
        "host": STRING,
        "port": INT_OR_STRING,
    },
    required=("port",),
)

s(
    "GRPCAction",
    {
        "port": INT32,
        "service": STRING,
    },
    required=("port",),
)

s(
    "SleepAction",
    {
        "seconds": INT64,
    },
    required=("seconds",),
)


# --- Security ---

s(
    "PodSecurityContext",
    {
        "appArmorProfile": r("AppArmorProfile"),
        "fsGroup": INT64,
        "fsGroupChangePolicy": STRING,
        "runAsGroup": INT64,
        "runAsNonRoot": BOOL,
        "runAsUser": INT64,
        "seLinuxChangePolicy": STRING,
        "seLinuxOptions": r("SELinuxOptions"),
        "seccompProfile": r("SeccompProfile"),
        "supplementalGroups": ListOf(INT64),
        "supplementalGroupsPolicy": STRING,
        "sysctls": ListOf(r("Sysctl")),
        "windowsOptions": r("WindowsSecurityContextOptions"),
    },
)

s(
    "SecurityContext",
    {
        "allowPrivilegeEscalation": BOOL,
        "appArmorProfile": r("AppArmorProfile"),
        "capabilities": r("Capabilities"),
        "privileged": BOOL,
        "procMount": STRING,
        "readOnlyRootFilesystem": BOOL,
        "runAsGroup": INT64,
        "runAsNonRoot": BOOL,
        "runAsUser": INT64,
        "seLinuxOptions": r("SELinuxOptions"),
        "seccompProfile": r("SeccompProfile"),
        "windowsOptions": r("WindowsSecurityContextOptions"),
    },
)

s(
    "Capabilities",
    {
        "add": ListOf(STRING),
        "drop": ListOf(STRING),
    },
)

s(
    "SELinuxOptions",
    {
        "level": STRING,
        "role": STRING,
        "type": STRING,
        "user": STRING,
    },
)

s(
    "SeccompProfile",
    {
        "localhostProfile": STRING,
        "type": STRING,
    },
    required=("type",),
)

s(
    "AppArmorProfile",
    {
        "localhostProfile": STRING,
        "type": STRING,
    },
    required=("type",),
)

s(
    "WindowsSecurityContextOptions",
    {
        "gmsaCredentialSpec": STRING,
        "gmsaCredentialSpecName": STRING,
        "hostProcess": BOOL,
        "runAsUserName": STRING,
    },
)

s(
    "Sysctl",
    {
        "name": STRING,
        "value": STRING,
    },
    required=("name", "value"),
)


# --- Volumes ---

s(
    "Volume",
    {
        "awsElasticBlockStore": r("AWSElasticBlockStoreVolumeSource"),
        "azureDisk": r("AzureDiskVolumeSource"),
        "azureFile": r("AzureFileVolumeSource"),
        "cephfs": r("CephFSVolumeSource"),
        "cinder": r("CinderVolumeSource"),
        "configMap": r("ConfigMapVolumeSource"),
        "csi": r("CSIVolumeSource"),
        "downwardAPI": r("DownwardAPIVolumeSource"),
        "emptyDir": r("EmptyDirVolumeSource"),
        "ephemeral": r("EphemeralVolumeSource"),
        "fc": r("FCVolumeSource"),
        "flexVolume": r("FlexVolumeSource"),
        "flocker": r("FlockerVolumeSource"),
        "gcePersistentDisk": r("GCEPersistentDiskVolumeSource"),
        "gitRepo": r("GitRepoVolumeSource"),
        "glusterfs": r("GlusterfsVolumeSource"),
        "hostPath": r("HostPathVolumeSource"),
        "image": r("ImageVolumeSource"),
        "iscsi": r("ISCSIVolumeSource"),
        "name": STRING,
        "nfs": r("NFSVolumeSource"),
        "persistentVolumeClaim": r("PersistentVolumeClaimVolumeSource"),
        "photonPersistentDisk": r("PhotonPersistentDiskVolumeSource"),
        "portworxVolume": r("PortworxVolumeSource"),
        "projected": r("ProjectedVolumeSource"),
        "quobyte": r("QuobyteVolumeSource"),
        "rbd": r("RBDVolumeSource"),
        "scaleIO": r("ScaleIOVolumeSource"),
        "secret": r("SecretVolumeSource"),
        "storageos": r("StorageOSVolumeSource"),
        "vsphereVolume": r("VsphereVirtualDiskVolumeSource"),
    },
    required=("name",),
)

s(
    "AWSElasticBlockStoreVolumeSource",
    {
        "fsType": STRING,
        "partition": INT32,
        "readOnly": BOOL,
        "volumeID": STRING,
    },
    required=("volumeID",),
)

s(
    "AzureDiskVolumeSource",
    {
        "cachingMode": STRING,
        "diskName": STRING,
        "diskURI": STRING,
        "fsType": STRING,
        "kind": STRING,
        "readOnly": BOOL,
    },
    required=("diskName", "diskURI"),
)

s(
    "AzureFileVolumeSource",
    {
        "readOnly": BOOL,
        "secretName": STRING,
        "shareName": STRING,
    },
    required=("secretName", "shareName"),
)

s(
    "CSIVolumeSource",
    {
        "driver": STRING,
        "fsType": STRING,
        "nodePublishSecretRef": r("LocalObjectReference"),
        "readOnly": BOOL,
        "volumeAttributes": MapOf(STRING),
    },
    required=("driver",),
)

s(
    "CephFSVolumeSource",
    {
        "monitors": ListOf(STRING),
        "path": STRING,
        "readOnly": BOOL,
        "secretFile": STRING,
        "secretRef": r("LocalObjectReference"),
        "user": STRING,
    },
    required=("monitors",),
)

s(
    "CinderVolumeSource",
    {
        "fsType": STRING,
        "readOnly": BOOL,
        "secretRef": r("LocalObjectReference"),
        "volumeID": STRING,
    },
    required=("volumeID",),
)

s(
    "ConfigMapVolumeSource",
    {
        "defaultMode": INT32,
        "items": ListOf(r("KeyToPath")),
        "name": STRING,
        "optional": BOOL,
    },
)

s(
    "DownwardAPIVolumeFile",
    {
        "fieldRef": r("ObjectFieldSelector"),
        "mode": INT32,
        "path": STRING,
        "resourceFieldRef": r("ResourceFieldSelector"),
    },
    required=("path",),
)

s(
    "DownwardAPIVolumeSource",
    {
        "defaultMode": INT32,
        "items": ListOf(r("DownwardAPIVolumeFile")),
    },
)

s(
    "EmptyDirVolumeSource",
    {
        "medium": STRING,
        "sizeLimit": QUANTITY,
    },
)

s(
    "FCVolumeSource",
    {
        "fsType": STRING,
        "lun": INT32,
        "readOnly": BOOL,
        "targetWWNs": ListOf(STRING),
        "wwids": ListOf(STRING),
    },
)

s(
    "FlexVolumeSource",
    {
        "driver": STRING,
        "fsType": STRING,
        "options": MapOf(STRING),
        "readOnly": BOOL,
        "secretRef": r("LocalObjectReference"),
    },
    required=("driver",),
)

s(
    "FlockerVolumeSource",
    {
        "datasetName": STRING,
        "datasetUUID": STRING,
    },
)

s(
    "GCEPersistentDiskVolumeSource",
    {
        "fsType": STRING,
        "partition": INT32,
        "pdName": STRING,
        "readOnly": BOOL,
    },
    required=("pdName",),
)

s(
    "GitRepoVolumeSource",
    {
        "directory": STRING,
        "repository": STRING,
        "revision": STRING,
    },
    required=("repository",),
)

s(
    "GlusterfsVolumeSource",
    {
        "endpoints": STRING,
        "path": STRING,
        "readOnly": BOOL,
    },
    required=("endpoints", "path"),
)

s(
    "HostPathVolumeSource",
    {
        "path": STRING,
        "type": STRING,
    },
    required=("path",),
)

s(
    "ISCSIVolumeSource",
    {
        "chapAuthDiscovery": BOOL,
        "chapAuthSession": BOOL,
        "fsType": STRING,
        "initiatorName": STRING,
        "iqn": STRING,
        "iscsiInterface": STRING,
        "lun": INT32,
        "portals": ListOf(STRING),
        "readOnly": BOOL,
        "secretRef": r("LocalObjectReference"),
        "targetPortal": STRING,
    },
    required=("iqn", "lun", "targetPortal"),
)

s(
    "ImageVolumeSource",
    {
        "pullPolicy": STRING,
        "reference": STRING,
    },
)

s(
    "KeyToPath",
    {
        "key": STRING,
        "mode": INT32,
        "path": STRING,
    },
    required=("key", "path"),
)

s(
    "NFSVolumeSource",
    {
        "path": STRING,
        "readOnly": BOOL,
        "server": STRING,
    },
    required=("path", "server"),
)

s(
    "PersistentVolumeClaimVolumeSource",
    {
        "claimName": STRING,
        "readOnly": BOOL,
    },
    required=("claimName",),
)

s(
    "PhotonPersistentDiskVolumeSource",
    {
        "fsType": STRING,
        "pdID": STRING,
    },
    required=("pdID",),
)

s(
    "PortworxVolumeSource",
    {
        "fsType": STRING,
        "readOnly": BOOL,
        "volumeID": STRING,
    },
    required=("volumeID",),
)

s(
    "QuobyteVolumeSource",
    {
        "group": STRING,
        "readOnly": BOOL,
        "registry": STRING,
        "tenant": STRING,
        "user": STRING,
        "volume": STRING,
    },
    required=("registry", "volume"),
)

s(
    "RBDVolumeSource",
    {
        "fsType": STRING,
        "image": STRING,
        "keyring": STRING,
        "monitors": ListOf(STRING),
        "pool": STRING,
        "readOnly": BOOL,
        "secretRef": r("LocalObjectReference"),
        "user": STRING,
    },
    required=("image", "monitors"),
)

s(
    "ScaleIOVolumeSource",
    {
        "fsType": STRING,
        "gateway": STRING,
        "protectionDomain": STRING,
        "readOnly": BOOL,
        "secretRef": r("LocalObjectReference"),
        "sslEnabled": BOOL,
        "storageMode": STRING,
        "storagePool": STRING,
        "system": STRING,
        "volumeName": STRING,
    },
    required=("gateway", "secretRef", "system"),
)

s(
    "SecretVolumeSource",
    {
        "defaultMode": INT32,
        "items": ListOf(r("KeyToPath")),
        "optional": BOOL,
        "secretName": STRING,
    },
)

s(
    "StorageOSVolumeSource",
    {
        "fsType": STRING,
        "readOnly": BOOL,
        "secretRef": r("LocalObjectReference"),
        "volumeName": STRING,
        "volumeNamespace": STRING,
    },
)

s(
    "VsphereVirtualDiskVolumeSource",
    {
        "fsType": STRING,
        "storagePolicyID": STRING,
        "storagePolicyName": STRING,
        "volumePath": STRING,
    },
    required=("volumePath",),
)


# --- Projected volumes ---

s(
    "ProjectedVolumeSource",
    {
        "defaultMode": INT32,
        "sources": ListOf(r("VolumeProjection")),
    },
)

s(
    "VolumeProjection",
    {
        "clusterTrustBundle": r("ClusterTrustBundleProjection"),
        "configMap": r("ConfigMapProjection"),
        "downwardAPI": r("DownwardAPIProjection"),
        "secret": r("SecretProjection"),
        "serviceAccountToken": r("ServiceAccountTokenProjection"),
    },
)

s(
    "ConfigMapProjection",
    {
        "items": ListOf(r("KeyToPath")),
        "name": STRING,
        "optional": BOOL,
    },
)

s(
    "SecretProjection",
    {
        "items": ListOf(r("KeyToPath")),
        "name": STRING,
        "optional": BOOL,
    },
)

s(
    "DownwardAPIProjection",
    {
        "items": ListOf(r("DownwardAPIVolumeFile")),
    },
)

s(
    "ServiceAccountTokenProjection",
    {
        "audience": STRING,
        "expirationSeconds": INT64,
        "path": STRING,
    },
    required=("path",),
)

s(
    "ClusterTrustBundleProjection",
    {
        "labelSelector": meta("LabelSelector"),
        "name": STRING,
        "optional": BOOL,
        "path": STRING,
        "signerName": STRING,
    },
    required=("path",),
)


# --- Generic ephemeral volumes (a claim template per pod) ---

s(
    "EphemeralVolumeSource",
    {
        "volumeClaimTemplate": r("PersistentVolumeClaimTemplate"),
    },
)

s(
    "PersistentVolumeClaimTemplate",
    {
        "metadata": meta("ObjectMeta"),
        "spec": r("PersistentVolumeClaimSpec"),
    },
    required=("spec",),
)

s(
    "PersistentVolumeClaimSpec",
    {
        "accessModes": ListOf(STRING),
        "dataSource": r("TypedLocalObjectReference"),
        "dataSourceRef": r("TypedObjectReference"),
        "resources": r("VolumeResourceRequirements"),
        "selector": meta("LabelSelector"),
        "storageClassName": STRING,
        "volumeAttributesClassName": STRING,
        "volumeMode": STRING,
        "volumeName": STRING,
    },
)

s(
    "VolumeResourceRequirements",
    {
        "limits": MapOf(QUANTITY),
        "requests": MapOf(QUANTITY),
    },
)

s(
    "TypedLocalObjectReference",
    {
        "apiGroup": STRING,
        "kind": STRING,
        "name": STRING,
    },
    required=("kind", "name"),
)

s(
    "TypedObjectReference",
    {
        "apiGroup": STRING,
        "kind": STRING,
        "name": STRING,
        "namespace": STRING,
    },
    required=("kind", "name"),
)


# --- Status ---

s(
    "PodStatus",
    {
        "conditions": ListOf(r("PodCondition")),
        "containerStatuses": ListOf(r("ContainerStatus")),
        "ephemeralContainerStatuses": ListOf(r("ContainerStatus")),
        "hostIP": STRING,
        "hostIPs": ListOf(r("HostIP")),
        "initContainerStatuses": ListOf(r("ContainerStatus")),
        "message": STRING,
        "nominatedNodeName": STRING,
        "phase": STRING,
        "podIP": STRING,
        "podIPs": ListOf(r("PodIP")),
        "qosClass": STRING,
        "reason": STRING,
        "resize": STRING,
        "resourceClaimStatuses": ListOf(r("PodResourceClaimStatus")),
        "startTime": TIME,
    },
)

s(
    "PodCondition",
    {
        "lastProbeTime": TIME,
        "lastTransitionTime": TIME,
        "message": STRING,
        "reason": STRING,
        "status": STRING,
        "type": STRING,
    },
    required=("status", "type"),
)

s(
    "PodIP",
    {
        "ip": STRING,
    },
    required=("ip",),
)

s(
    "HostIP",
    {
        "ip": STRING,
    },
    required=("ip",),
)

s(
    "PodResourceClaimStatus",
    {
        "name": STRING,
        "resourceClaimName": STRING,
    },
    required=("name",),
)

s(
    "ContainerStatus",
    {
        "allocatedResources": MapOf(QUANTITY),
        "allocatedResourcesStatus": ListOf(r("ResourceStatus")),
        "containerID": STRING,
        "image": STRING,
        "imageID": STRING,
        "lastState": r("ContainerState"),
        "name": STRING,
        "ready": BOOL,
        "resources": r("ResourceRequirements"),
        "restartCount": INT32,
        "started": BOOL,
        "state": r("ContainerState"),
        "user": r("ContainerUser"),
        "volumeMounts": ListOf(r("VolumeMountStatus")),
    },
    required=("image", "imageID", "name", "ready", "restartCount"),
)

s(
    "ContainerState",
    {
        "running": r("ContainerStateRunning"),
        "terminated": r("ContainerStateTerminated"),
        "waiting": r("ContainerStateWaiting"),
    },
)

s(
    "ContainerStateWaiting",
    {
        "message": STRING,
        "reason": STRING,
    },
)

s(
    "ContainerStateRunning",
    {
        "startedAt": TIME,
    },
)

s(
    "ContainerStateTerminated",
    {
        "containerID": STRING,
        "exitCode": INT32,
        "finishedAt": TIME,
        "message": STRING,
        "reason": STRING,
        "signal": INT32,
        "startedAt": TIME,
    },
    required=("exitCode",),
)

s(
    "ContainerUser",
    {
        "linux": r("LinuxContainerUser"),
    },
)

s(
    "LinuxContainerUser",
    {
        "gid": INT64,
        "supplementalGroups": ListOf(INT64),
        "uid": INT64,
    },
    required=("gid", "uid"),
)

s(
    "VolumeMountStatus",
    {
        "mountPath": STRING,
        "name": STRING,
        "readOnly": BOOL,
        "recursiveReadOnly": STRING,
    },
    required=("mountPath", "name"),
)

s(
    "ResourceStatus",
    {
        "name": STRING,
        "resources": ListOf(r("ResourceHealth")),
    },
    required=("name",),
)

s(
    "ResourceHealth",
    {
        "health": STRING,
        "resourceID": STRING,
    },
    required=("resourceID",),
)

kind("", "v1", "Pod", C + "Pod")
