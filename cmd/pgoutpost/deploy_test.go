package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/pflag"
	"gopkg.in/yaml.v3"

	"github.com/pgoutpost/pgoutpost/config"
	"github.com/pgoutpost/pgoutpost/internal/promtest"
	"github.com/pgoutpost/pgoutpost/registry"
	"github.com/pgoutpost/pgoutpost/sidecar"
)

// The deployment files checked here live at the repository root.
const (
	kubernetesDir = "../../deploy/kubernetes"
	dashboardFile = "../../deploy/grafana/pgoutpost.json"
	dockerfile    = "../../Dockerfile"
)

// contractMetrics are the metrics the sidecar registers, as agreed between
// the run loop and the dashboard (histograms by their base name).
var contractMetrics = []string{
	"pgoutpost_stream_messages_total",
	"pgoutpost_queue_entries_total",
	"pgoutpost_queue_pending_entries",
	"pgoutpost_queue_dead_letters",
	"pgoutpost_queue_commit_to_done_seconds",
	"pgoutpost_cascade_rows_total",
	"pgoutpost_slot_lag_bytes",
	"pgoutpost_slot_safe_wal_size_bytes",
	"pgoutpost_slot_wal_status",
	"pgoutpost_stream_flush_lsn",
	"pgoutpost_nats_publish_seconds",
	"pgoutpost_nats_outstanding_acks",
	"pgoutpost_nats_connected",
	"pgoutpost_reconnects_total",
	"pgoutpost_ready",
	"pgoutpost_queue_lag_seconds",
	"pgoutpost_queue_swept_entries_total",
	"pgoutpost_slot_recoveries_total",
}

// The parts of Kubernetes objects the checks read; yaml.v3 ignores the rest.
type manifest struct {
	file       string
	APIVersion string            `yaml:"apiVersion"`
	Kind       string            `yaml:"kind"`
	Metadata   objectMeta        `yaml:"metadata"`
	Data       map[string]string `yaml:"data"`
	StringData map[string]string `yaml:"stringData"`
	Resources  []string          `yaml:"resources"` // Kustomization
	Spec       struct {
		Replicas *int `yaml:"replicas"`
		Strategy struct {
			Type string `yaml:"type"`
		} `yaml:"strategy"`
		Selector struct {
			MatchLabels map[string]string `yaml:"matchLabels"`
		} `yaml:"selector"`
		Template    podTemplate `yaml:"template"` // Deployment, Job
		Schedule    string      `yaml:"schedule"` // CronJob
		JobTemplate struct {
			Spec struct {
				Template podTemplate `yaml:"template"`
			} `yaml:"spec"`
		} `yaml:"jobTemplate"`
	} `yaml:"spec"`
}

type objectMeta struct {
	Name        string            `yaml:"name"`
	Labels      map[string]string `yaml:"labels"`
	Annotations map[string]string `yaml:"annotations"`
}

type podTemplate struct {
	Metadata objectMeta `yaml:"metadata"`
	Spec     podSpec    `yaml:"spec"`
}

type podSpec struct {
	TerminationGracePeriodSeconds *int64 `yaml:"terminationGracePeriodSeconds"`
	RestartPolicy                 string `yaml:"restartPolicy"`
	SecurityContext               struct {
		RunAsNonRoot *bool  `yaml:"runAsNonRoot"`
		RunAsUser    *int64 `yaml:"runAsUser"`
	} `yaml:"securityContext"`
	InitContainers []k8sContainer `yaml:"initContainers"`
	Containers     []k8sContainer `yaml:"containers"`
	Volumes        []struct {
		Name      string `yaml:"name"`
		ConfigMap *struct {
			Name string `yaml:"name"`
		} `yaml:"configMap"`
		EmptyDir any `yaml:"emptyDir"`
	} `yaml:"volumes"`
}

type k8sContainer struct {
	Name    string   `yaml:"name"`
	Image   string   `yaml:"image"`
	Command []string `yaml:"command"`
	Args    []string `yaml:"args"`
	Ports   []struct {
		Name          string `yaml:"name"`
		ContainerPort int    `yaml:"containerPort"`
	} `yaml:"ports"`
	Env []struct {
		Name      string `yaml:"name"`
		Value     string `yaml:"value"`
		ValueFrom *struct {
			SecretKeyRef *struct {
				Name string `yaml:"name"`
				Key  string `yaml:"key"`
			} `yaml:"secretKeyRef"`
		} `yaml:"valueFrom"`
	} `yaml:"env"`
	LivenessProbe  *k8sProbe `yaml:"livenessProbe"`
	ReadinessProbe *k8sProbe `yaml:"readinessProbe"`
	Resources      struct {
		Requests map[string]string `yaml:"requests"`
		Limits   map[string]string `yaml:"limits"`
	} `yaml:"resources"`
	SecurityContext struct {
		ReadOnlyRootFilesystem   *bool `yaml:"readOnlyRootFilesystem"`
		AllowPrivilegeEscalation *bool `yaml:"allowPrivilegeEscalation"`
	} `yaml:"securityContext"`
	VolumeMounts []struct {
		Name      string `yaml:"name"`
		MountPath string `yaml:"mountPath"`
	} `yaml:"volumeMounts"`
}

type k8sProbe struct {
	HTTPGet *struct {
		Path string `yaml:"path"`
		Port string `yaml:"port"` // a number or a port name
	} `yaml:"httpGet"`
}

// readManifests parses every YAML document under dir.
func readManifests(t *testing.T, dir string) []*manifest {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests in %s (%v)", dir, err)
	}
	var out []*manifest
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		dec := yaml.NewDecoder(bytes.NewReader(data))
		for i := 0; ; i++ {
			m := &manifest{}
			err := dec.Decode(m)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("%s document %d: %v", f, i+1, err)
			}
			m.file = filepath.Base(f)
			if m.APIVersion == "" || m.Kind == "" {
				t.Errorf("%s document %d: apiVersion and kind are required", f, i+1)
			}
			if m.Kind != "Kustomization" && m.Metadata.Name == "" {
				t.Errorf("%s document %d (%s): metadata.name is required", f, i+1, m.Kind)
			}
			out = append(out, m)
		}
	}
	return out
}

// pod is one pod template of a workload.
type pod struct {
	where string // "Deployment shop-staging"
	kind  string
	meta  objectMeta
	spec  podSpec
	owner *manifest
}

func pods(ms []*manifest) []pod {
	var out []pod
	for _, m := range ms {
		switch m.Kind {
		case "Deployment", "Job", "StatefulSet", "DaemonSet":
			out = append(out, pod{m.Kind + " " + m.Metadata.Name, m.Kind, m.Spec.Template.Metadata, m.Spec.Template.Spec, m})
		case "CronJob":
			tpl := m.Spec.JobTemplate.Spec.Template
			out = append(out, pod{m.Kind + " " + m.Metadata.Name, m.Kind, tpl.Metadata, tpl.Spec, m})
		}
	}
	return out
}

// commandRoles says which role's configuration each command needs.
var commandRoles = map[string]registry.Role{
	"run":                 registry.RoleSlave,
	"subscription create": registry.RoleSlave,
	"subscription update": registry.RoleSlave,
	"publication create":  registry.RoleMaster,
	"publication update":  registry.RoleMaster,
	"queue expire":        registry.RoleMaster,
}

func TestKubernetesManifests(t *testing.T) {
	ms := readManifests(t, kubernetesDir)

	configMaps := map[string]map[string]string{}
	secrets := map[string]map[string]bool{}
	byKind := map[string]int{}
	for _, m := range ms {
		byKind[m.Kind]++
		switch m.Kind {
		case "ConfigMap":
			configMaps[m.Metadata.Name] = m.Data
		case "Secret":
			keys := map[string]bool{}
			for k := range m.Data {
				keys[k] = true
			}
			for k := range m.StringData {
				keys[k] = true
			}
			secrets[m.Metadata.Name] = keys
		case "Kustomization":
			for _, r := range m.Resources {
				if _, err := os.Stat(filepath.Join(kubernetesDir, r)); err != nil {
					t.Errorf("kustomization.yaml lists %s: %v", r, err)
				}
			}
		}
	}
	for _, kind := range []string{"Deployment", "ConfigMap", "Secret", "CronJob"} {
		if byKind[kind] == 0 {
			t.Errorf("no %s in %s", kind, kubernetesDir)
		}
	}

	// Every sidecar.yaml in a ConfigMap is a valid configuration as it
	// stands: its connection strings come from environment variables, which
	// validation names but does not read.
	configs := map[string]*config.Config{}
	for name, data := range configMaps {
		text, ok := data["sidecar.yaml"]
		if !ok {
			continue
		}
		cfg, err := config.Parse("ConfigMap "+name+" sidecar.yaml", []byte(text), nil)
		if err != nil {
			t.Errorf("ConfigMap %s: %v", name, err)
			continue
		}
		configs[name] = cfg
	}
	if len(configs) == 0 {
		t.Fatal("no ConfigMap holds a sidecar.yaml")
	}

	sidecars := 0
	for _, p := range pods(ms) {
		t.Run(p.where, func(t *testing.T) {
			if p.spec.SecurityContext.RunAsNonRoot == nil || !*p.spec.SecurityContext.RunAsNonRoot {
				t.Errorf("securityContext.runAsNonRoot: want true")
			}
			volumes := map[string]string{} // volume → ConfigMap name ("" for others)
			for _, v := range p.spec.Volumes {
				volumes[v.Name] = ""
				if v.ConfigMap != nil {
					if _, ok := configMaps[v.ConfigMap.Name]; !ok {
						t.Errorf("volume %s: no ConfigMap %s", v.Name, v.ConfigMap.Name)
					}
					volumes[v.Name] = v.ConfigMap.Name
				}
			}
			for _, c := range append(slices.Clone(p.spec.InitContainers), p.spec.Containers...) {
				for _, e := range c.Env {
					if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
						ref := e.ValueFrom.SecretKeyRef
						if !secrets[ref.Name][ref.Key] {
							t.Errorf("container %s env %s: no key %q in Secret %s", c.Name, e.Name, ref.Key, ref.Name)
						}
					}
				}
				for _, vm := range c.VolumeMounts {
					if _, ok := volumes[vm.Name]; !ok {
						t.Errorf("container %s mounts volume %s, which the pod does not have", c.Name, vm.Name)
					}
				}
				if c.SecurityContext.ReadOnlyRootFilesystem == nil || !*c.SecurityContext.ReadOnlyRootFilesystem {
					t.Errorf("container %s: securityContext.readOnlyRootFilesystem: want true", c.Name)
				}
				if c.SecurityContext.AllowPrivilegeEscalation == nil || *c.SecurityContext.AllowPrivilegeEscalation {
					t.Errorf("container %s: securityContext.allowPrivilegeEscalation: want false", c.Name)
				}
				if !strings.Contains(c.Image, "pgoutpost") {
					continue
				}
				if len(c.Command) > 0 {
					t.Errorf("container %s: command %q replaces the image's entrypoint; give args", c.Name, c.Command)
				}
				cmdName, cfg := checkPgoutpostContainer(t, c, volumes, configs)
				if cfg == nil {
					continue
				}
				if want, ok := commandRoles[cmdName]; ok && cfg.Role != want {
					t.Errorf("container %s: %s runs on the %s; its configuration says role: %s", c.Name, cmdName, want, cfg.Role)
				}
				if cmdName == "run" {
					sidecars++
					checkSidecar(t, p, c, cfg)
				}
			}
		})
	}
	if sidecars == 0 {
		t.Error("no pod runs `pgoutpost run`")
	}
}

// checkPgoutpostContainer checks that a pgoutpost container's args name a
// command with flags it accepts, that --config names a sidecar.yaml mounted
// from a ConfigMap, and that the environment variables the configuration
// reads are set. It returns the command and its configuration.
func checkPgoutpostContainer(t *testing.T, c k8sContainer, volumes map[string]string, configs map[string]*config.Config) (string, *config.Config) {
	t.Helper()
	if len(c.Args) == 0 {
		t.Errorf("container %s: no args (the image's default is `run`; say it)", c.Name)
		return "", nil
	}
	cmd, rest, ok := lookup(c.Args)
	if !ok {
		t.Errorf("container %s: args %q name no pgoutpost command", c.Name, c.Args)
		return "", nil
	}
	// --help after the flags: the command parses them all, then stops.
	var out bytes.Buffer
	err := cmd.run(context.Background(), &env{stdout: &out, stderr: &out}, append(slices.Clone(rest), "--help"))
	if !errors.Is(err, pflag.ErrHelp) {
		t.Errorf("container %s: pgoutpost %s does not accept %q: %v\n%s", c.Name, cmd.name, rest, err, out.String())
	}
	name := cmd.name

	fs := pflag.NewFlagSet("args", pflag.ContinueOnError)
	fs.ParseErrorsAllowlist.UnknownFlags = true
	fs.SetOutput(io.Discard)
	path := fs.String("config", "", "")
	_ = fs.Parse(c.Args)
	if *path == "" {
		t.Errorf("container %s: no --config", c.Name)
		return name, nil
	}
	var cfg *config.Config
	for _, vm := range c.VolumeMounts {
		if filepath.Dir(*path) == filepath.Clean(vm.MountPath) && volumes[vm.Name] != "" {
			if cfg = configs[volumes[vm.Name]]; cfg == nil || filepath.Base(*path) != "sidecar.yaml" {
				t.Errorf("container %s: --config %s: ConfigMap %s has no valid sidecar.yaml", c.Name, *path, volumes[vm.Name])
				return name, nil
			}
		}
	}
	if cfg == nil {
		t.Errorf("container %s: --config %s is not in a mounted ConfigMap", c.Name, *path)
		return name, nil
	}

	set := map[string]bool{}
	for _, e := range c.Env {
		set[e.Name] = true
	}
	need := []string{cfg.Database.Env}
	if cfg.Role == registry.RoleSlave {
		need = append(need, cfg.Master.Env)
		if name == "run" {
			need = append(need, cfg.NATS.TokenEnv)
		}
	}
	for _, v := range need {
		if v != "" && !set[v] {
			t.Errorf("container %s: the configuration reads $%s, which the container does not set", c.Name, v)
		}
	}
	if cfg.Database.DSN != "" || cfg.Master.DSN != "" {
		t.Errorf("container %s: an inline dsn in a ConfigMap; use dsn_env with a Secret", c.Name)
	}
	return name, cfg
}

// checkSidecar checks the sidecar container against its configuration: the
// listen port is the container port, the probes' port and the scrape port.
func checkSidecar(t *testing.T, p pod, c k8sContainer, cfg *config.Config) {
	t.Helper()
	_, portText, err := net.SplitHostPort(cfg.Sidecar.Listen)
	if err != nil {
		t.Fatalf("sidecar.listen %q: %v", cfg.Sidecar.Listen, err)
	}
	listen, _ := strconv.Atoi(portText)
	ports := map[string]int{}
	found := false
	for _, cp := range c.Ports {
		if cp.Name != "" {
			ports[cp.Name] = cp.ContainerPort
		}
		found = found || cp.ContainerPort == listen
	}
	if !found {
		t.Errorf("container %s: no containerPort %d (sidecar.listen %q)", c.Name, listen, cfg.Sidecar.Listen)
	}
	for _, pr := range []struct {
		name, path string
		probe      *k8sProbe
	}{{"livenessProbe", "/healthz", c.LivenessProbe}, {"readinessProbe", "/readyz", c.ReadinessProbe}} {
		if pr.probe == nil || pr.probe.HTTPGet == nil {
			t.Errorf("container %s: no %s.httpGet", c.Name, pr.name)
			continue
		}
		if pr.probe.HTTPGet.Path != pr.path {
			t.Errorf("container %s: %s path %q, want %s", c.Name, pr.name, pr.probe.HTTPGet.Path, pr.path)
		}
		port, err := strconv.Atoi(pr.probe.HTTPGet.Port)
		if err != nil {
			port = ports[pr.probe.HTTPGet.Port]
		}
		if port != listen {
			t.Errorf("container %s: %s port %q is %d, sidecar.listen is port %d", c.Name, pr.name, pr.probe.HTTPGet.Port, port, listen)
		}
	}
	a := p.meta.Annotations
	if a["prometheus.io/scrape"] != "true" || a["prometheus.io/port"] != portText || a["prometheus.io/path"] != "/metrics" {
		t.Errorf("pod annotations %v: want prometheus.io/scrape \"true\", port %q, path /metrics", a, portText)
	}
	if len(c.Resources.Requests) == 0 || c.Resources.Limits["memory"] == "" {
		t.Errorf("container %s: want resource requests and a memory limit", c.Name)
	}
	if g := p.spec.TerminationGracePeriodSeconds; g == nil || time.Duration(*g)*time.Second <= cfg.Sidecar.ShutdownGrace {
		t.Errorf("terminationGracePeriodSeconds must exceed sidecar.shutdown_grace (%s)", cfg.Sidecar.ShutdownGrace)
	}
	tmp := false
	for _, vm := range c.VolumeMounts {
		tmp = tmp || vm.MountPath == "/tmp"
	}
	if !tmp {
		t.Errorf("container %s: no writable /tmp for spilled transactions (the root filesystem is read-only)", c.Name)
	}
	if p.kind == "Deployment" {
		// One slot, one reader: never two sidecars of a slave at once.
		if r := p.owner.Spec.Replicas; r == nil || *r != 1 {
			t.Errorf("replicas: want 1 (the sidecar holds the slave's slot)")
		}
		if p.owner.Spec.Strategy.Type != "Recreate" {
			t.Errorf("strategy %q: want Recreate (the sidecar holds the slave's slot)", p.owner.Spec.Strategy.Type)
		}
	}
}

// metricName matches a metric in a PromQL expression.
var metricName = regexp.MustCompile(`\bpgoutpost_[a-z_]+\b`)

func TestGrafanaDashboard(t *testing.T) {
	data, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Title  string           `json:"title"`
		UID    string           `json:"uid"`
		Panels []map[string]any `json:"panels"`
	}
	if err := json.Unmarshal(data, &dash); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	if dash.Title == "" || dash.UID == "" {
		t.Errorf("title %q uid %q: want both", dash.Title, dash.UID)
	}
	var exprs []string
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			if e, ok := v["expr"].(string); ok {
				exprs = append(exprs, e)
			}
			for _, x := range v {
				walk(x)
			}
		case []any:
			for _, x := range v {
				walk(x)
			}
		}
	}
	ids := map[float64]bool{}
	for _, p := range dash.Panels {
		id, _ := p["id"].(float64)
		if ids[id] {
			t.Errorf("panel %q: id %v used twice", p["title"], id)
		}
		ids[id] = true
		walk(p)
	}
	if len(exprs) == 0 {
		t.Fatal("the dashboard queries nothing")
	}
	registered := sidecarMetrics(t)
	for _, m := range contractMetrics {
		if !slices.Contains(registered, m) {
			t.Errorf("the sidecar does not register %s, which the metrics contract lists", m)
		}
	}
	used := map[string]bool{}
	for _, e := range exprs {
		for _, m := range metricName.FindAllString(e, -1) {
			base := m
			for _, s := range []string{"_bucket", "_count", "_sum"} {
				if b, ok := strings.CutSuffix(m, s); ok && slices.Contains(registered, b) {
					base = b
				}
			}
			if !slices.Contains(registered, base) {
				t.Errorf("query %q: %s is not a metric of the sidecar", e, m)
			}
			if strings.HasSuffix(m, "_bucket") && !strings.Contains(e, "histogram_quantile") {
				t.Errorf("query %q: buckets outside histogram_quantile", e)
			}
			used[base] = true
		}
	}
	var unused []string
	for _, m := range registered {
		if !used[m] {
			unused = append(unused, m)
		}
	}
	sort.Strings(unused)
	if len(unused) > 0 {
		t.Errorf("the dashboard shows nothing of %v", unused)
	}
}

// sidecarMetrics returns the names of the metrics sidecar.NewMetrics
// registers.
func sidecarMetrics(t *testing.T) []string {
	t.Helper()
	names, err := promtest.Names(func(r prometheus.Registerer) error { _, err := sidecar.NewMetrics(r); return err })
	if err != nil || len(names) == 0 {
		t.Fatalf("sidecar.NewMetrics registered %v: %v", names, err)
	}
	return names
}

// TestDockerfile checks what the image promises without a Docker engine: a
// static build, a non-root user, no HEALTHCHECK, and a default command that
// the binary has.
func TestDockerfile(t *testing.T) {
	data, err := os.ReadFile(dockerfile)
	if err != nil {
		t.Fatal(err)
	}
	text := string(data)
	for _, want := range []string{"CGO_ENABLED=0", "USER 65532", `ENTRYPOINT ["/usr/local/bin/pgoutpost"]`, "-o /out/pgoutpost ./cmd/pgoutpost"} {
		if !strings.Contains(text, want) {
			t.Errorf("Dockerfile: no %q", want)
		}
	}
	var cmdLine string
	for _, line := range strings.Split(text, "\n") {
		if strings.HasPrefix(strings.ToUpper(line), "HEALTHCHECK") {
			t.Errorf("Dockerfile: %q (probes use /healthz and /readyz)", line)
		}
		if strings.HasPrefix(line, "CMD ") {
			cmdLine = strings.TrimPrefix(line, "CMD ")
		}
	}
	var args []string
	if err := json.Unmarshal([]byte(cmdLine), &args); err != nil || len(args) == 0 {
		t.Fatalf("Dockerfile CMD %q: want a JSON array (%v)", cmdLine, err)
	}
	if args[0] != "run" {
		t.Errorf("Dockerfile CMD %q: want run", args)
	}
	cmd, rest, ok := lookup(args)
	if !ok {
		t.Fatalf("Dockerfile CMD %q: no such command", args)
	}
	var out bytes.Buffer
	if err := cmd.run(context.Background(), &env{stdout: &out, stderr: &out}, append(rest, "--help")); !errors.Is(err, pflag.ErrHelp) {
		t.Errorf("Dockerfile CMD %q: %v\n%s", args, err, out.String())
	}
}
