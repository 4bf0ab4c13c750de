// A real node for the test control plane (`kcp up --node`): kube-scheduler, containerd and
// a kubelet on this machine, so that pods run; and `kcp node-down`, which undoes it.
//
// Everything the node changes outside its data dir is written to a journal
// (DATA/node/journal, one JSON object a line) before it is made, so that the teardown
// undoes exactly that, in reverse, also from another process after kcp itself was killed.
// What it touches:
//   - processes: kube-scheduler, containerd, the kubelet (PIDs), then containerd's shims and
//     the containers (found by their -address argument and by the cgroupRoot's cgroup.procs);
//   - cgroups: cgroupRoot (/kcp-node) in every v1 hierarchy;
//   - network: a bridge (kcpbr0, 10.244.0.1/24) and iptables chains KCP-NODE-* with their
//     jumps (and the nft tables the iptables-nft backend had to create for them);
//   - mounts: the kubelet root dir bound onto itself and made rshared (its pods' volumes
//     under it); containerd and the kubelet run in private mount namespaces, where copies of
//     the kernel settings they write and scratch dirs over the host paths they write are
//     mounted, so that none of that reaches the machine;
//   - host dirs: the mount points of those scratch dirs, when they did not exist.
//
// The kernel settings that any of it could change are recorded before and compared after.
package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

const (
	nodeName         = "127.0.0.1" // an IP: the kubelet never looks its name up in DNS
	nodeBridge       = "kcpbr0"
	nodeBridgeIP     = "10.244.0.1"
	nodePodCIDR      = "10.244.0.0/24"
	nodeServiceCIDR  = "10.0.0.0/24" // kube-apiserver --service-cluster-ip-range
	nodeAPIServiceIP = "10.0.0.1"    // the `kubernetes` Service (in the serving certificate)
	nodeCgroupRoot   = "kcp-node"
	nodeChainPrefix  = "KCP-NODE-"
	defaultPauseRef  = "registry.k8s.io/pause:3.10"
)

// Controllers added to kube-controller-manager's list when a node runs.
var nodeControllers = []string{
	"deployment-controller",
	"replicaset-controller",
	"node-lifecycle-controller", // clears the node.kubernetes.io/not-ready taint
	"endpointslice-controller",
	"disruption-controller", // PodDisruptionBudget status
	"pod-garbage-collector-controller",
}

// Kernel settings (under /proc/sys) recorded before the node starts and compared after it
// stopped. The first six are written by the kubelet at start, ip_forward by the CNI bridge
// plugin; the others are global settings a node could plausibly touch.
var nodeSysctls = []string{
	"vm/overcommit_memory",
	"vm/panic_on_oom",
	"kernel/panic",
	"kernel/panic_on_oops",
	"kernel/keys/root_maxkeys",
	"kernel/keys/root_maxbytes",
	"net/ipv4/ip_forward",
	"net/ipv4/conf/all/forwarding",
	"net/ipv4/conf/default/forwarding",
	"net/ipv4/conf/all/route_localnet",
	"net/ipv4/conf/default/route_localnet",
	"net/ipv6/conf/all/forwarding",
	"net/ipv6/conf/default/forwarding",
	"net/ipv6/conf/all/disable_ipv6",
	"net/ipv6/conf/default/disable_ipv6",
	"net/bridge/bridge-nf-call-iptables",
	"net/bridge/bridge-nf-call-ip6tables",
	"net/bridge/bridge-nf-call-arptables",
	"net/netfilter/nf_conntrack_max",
	"kernel/pid_max",
	"kernel/keys/maxkeys",
	"kernel/keys/maxbytes",
	"vm/max_map_count",
	"fs/inotify/max_user_instances",
	"fs/inotify/max_user_watches",
}

// The kubelet writes these at start (unless protectKernelDefaults): it gets copies.
var kubeletSysctls = nodeSysctls[:6]

// ---------------------------------------------------------------- journal

type jentry struct {
	Op    string   `json:"op"`
	Name  string   `json:"name,omitempty"`
	Path  string   `json:"path,omitempty"`
	PID   int      `json:"pid,omitempty"`
	Start uint64   `json:"start,omitempty"` // /proc/PID/stat starttime: a reused PID is not ours
	Ino   uint64   `json:"ino,omitempty"`
	Table string   `json:"table,omitempty"`
	Chain string   `json:"chain,omitempty"`
	Args  []string `json:"args,omitempty"`
}

// Journal operations.
const (
	jOwner   = "owner"      // the kcp process that runs the node
	jSysctls = "sysctls"    // Path: the kernel settings from before
	jCgroup  = "cgroup"     // Name: cgroupRoot, created in every v1 hierarchy
	jLink    = "link"       // Name: the bridge
	jTable   = "ipt-table"  // Table: an iptables table that did not exist (nft backend)
	jChain   = "ipt-chain"  // Table, Chain
	jJump    = "ipt-jump"   // Table, Chain (built-in), Args: the rule that jumps to ours
	jMount   = "mount"      // Path: a mount on the host (everything under it goes too)
	jHostDir = "hostdir"    // Path: a dir made outside the data dir (a mount point)
	jScratch = "scratch"    // Path: a dir in the data dir mounted over a host path in a namespace
	jProc    = "proc"       // Name, PID, Start
	jMntNS   = "mntns"      // Name, Ino: a private mount namespace; its processes are ours
	jSocket  = "containerd" // Path: containerd's socket (its shims name it in -address)
)

type journal struct {
	path string
	f    *os.File
}

func openJournal(path string) (*journal, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	return &journal{path: path, f: f}, nil
}

// add records e durably; callers add before they make the thing, so that a crash in
// between leaves at worst an entry whose undo finds nothing.
func (j *journal) add(e jentry) error {
	b, err := json.Marshal(e)
	if err != nil {
		return err
	}
	if _, err := j.f.Write(append(b, '\n')); err != nil {
		return err
	}
	return j.f.Sync()
}

func (j *journal) close() {
	if j != nil && j.f != nil {
		_ = j.f.Close()
	}
}

func readJournal(path string) ([]jentry, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var out []jentry
	for i, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		var e jentry
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			// A torn last line (killed while writing) is the only expected case.
			logf("node journal %s line %d unreadable (%v); skipped", path, i+1, err)
			continue
		}
		out = append(out, e)
	}
	return out, nil
}

// ---------------------------------------------------------------- small helpers

func run(name string, args ...string) (string, error) {
	cmd := exec.Command(name, args...)
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	err := cmd.Run()
	if err != nil {
		return out.String(), fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	return out.String(), nil
}

func exists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}

func readSysctl(name string) (string, bool) {
	b, err := os.ReadFile("/proc/sys/" + name)
	if err != nil {
		return "", false
	}
	return strings.Join(strings.Fields(string(b)), " "), true
}

func snapshotSysctls() map[string]string {
	m := map[string]string{}
	for _, k := range nodeSysctls {
		if v, ok := readSysctl(k); ok {
			m[k] = v
		}
	}
	return m
}

func formatSysctls(m map[string]string) string {
	var parts []string
	for _, k := range nodeSysctls {
		if v, ok := m[k]; ok {
			parts = append(parts, strings.ReplaceAll(k, "/", ".")+"="+strings.ReplaceAll(v, " ", ","))
		}
	}
	return strings.Join(parts, " ")
}

// procStat: field 22 of /proc/PID/stat (start time in clock ticks since boot) and the
// process state; ok is false when there is no such process.
func procStat(pid int) (start uint64, state byte, ok bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, 0, false
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 20 {
		return 0, 0, false
	}
	start, _ = strconv.ParseUint(f[19], 10, 64)
	return start, f[0][0], true
}

// alive: the process exists, is the one recorded (same start time, when known) and is not
// a zombie.
func alive(pid int, start uint64) bool {
	if pid <= 1 {
		return false
	}
	st, state, ok := procStat(pid)
	if !ok || state == 'Z' || state == 'X' {
		return false
	}
	return start == 0 || st == start
}

// stopProc sends sig, waits up to grace, then SIGKILLs and waits. It returns false if the
// process is still there at the end.
func stopProc(pid int, start uint64, sig syscall.Signal, grace time.Duration) bool {
	if !alive(pid, start) {
		return true
	}
	_ = syscall.Kill(pid, sig)
	deadline := time.Now().Add(grace)
	for time.Now().Before(deadline) {
		if !alive(pid, start) {
			return true
		}
		time.Sleep(50 * time.Millisecond)
	}
	if sig != syscall.SIGKILL {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	deadline = time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if !alive(pid, start) {
			return true
		}
		time.Sleep(50 * time.Millisecond)
	}
	return false
}

func allPIDs() []int {
	ents, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range ents {
		if pid, err := strconv.Atoi(e.Name()); err == nil {
			out = append(out, pid)
		}
	}
	return out
}

func nsIno(path string) uint64 {
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		return 0
	}
	return st.Ino
}

// shimPIDs: processes whose argv has "-address SOCK" (containerd's shims; ctr too).
func shimPIDs(sock string) []int {
	var out []int
	for _, pid := range allPIDs() {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil || len(b) == 0 {
			continue
		}
		args := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
		for i, a := range args {
			if (a == "-address" || a == "--address") && i+1 < len(args) && args[i+1] == sock {
				out = append(out, pid)
				break
			}
			if a == "-address="+sock || a == "--address="+sock {
				out = append(out, pid)
				break
			}
		}
	}
	return out
}

// Programs that run in the node's mount namespaces (containerd's and the kubelet's).
var nodeNSPrograms = map[string]bool{
	"containerd": true, "containerd-shim-runc-v2": true, "containerd-shim": true, "runc": true,
	"ctr": true, "kcp": true, "mount": true, "umount": true,
}

// mntnsPIDs: processes in one of the given mount namespaces that are the node's: a
// namespace's inode number is reused once it is gone, so a process also has to run one of
// the node's programs (or a CNI plugin) and to be younger than the node's kcp.
func mntnsPIDs(inos map[uint64]bool, notBefore uint64) []int {
	if len(inos) == 0 {
		return nil
	}
	selfNS := nsIno("/proc/self/ns/mnt")
	var out []int
	for _, pid := range allPIDs() {
		ino := nsIno(fmt.Sprintf("/proc/%d/ns/mnt", pid))
		if ino == 0 || ino == selfNS || !inos[ino] || pid == os.Getpid() {
			continue
		}
		exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
		if err != nil {
			continue
		}
		exe = strings.TrimSuffix(exe, " (deleted)")
		if !nodeNSPrograms[filepath.Base(exe)] && !strings.HasPrefix(exe, "/usr/lib/cni/") {
			continue
		}
		if st, _, ok := procStat(pid); !ok || st < notBefore {
			continue
		}
		out = append(out, pid)
	}
	return out
}

// ownerStart: when the node's kcp started (clock ticks since boot); 0 if unknown.
func ownerStart(entries []jentry) uint64 {
	for _, e := range entries {
		if e.Op == jOwner {
			return e.Start
		}
	}
	return 0
}

// ---------------------------------------------------------------- mounts and cgroups

type mountEntry struct {
	point, fstype, super string
	optional             string
}

func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func readMounts(pid string) []mountEntry {
	f, err := os.Open("/proc/" + pid + "/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []mountEntry
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		sep := -1
		for i, x := range fields {
			if x == "-" {
				sep = i
				break
			}
		}
		if sep < 6 || len(fields) < sep+4 {
			continue
		}
		out = append(out, mountEntry{
			point:    unescapeMount(fields[4]),
			optional: strings.Join(fields[6:sep], " "),
			fstype:   fields[sep+1],
			super:    fields[sep+3],
		})
	}
	return out
}

// Paths the node's processes bind-mount over inside their mount namespaces.
var nodeBindTargets = []string{"/proc/sys", "/run", "/var/lib", "/var/log"}

// sharedMounts names the host mounts holding a bind target (or dataDir) that propagate
// (`shared:` in mountinfo).
func sharedMounts(dataDir string) []string {
	ms := readMounts("self")
	var out []string
	seen := map[string]bool{}
	for _, target := range append(append([]string{}, nodeBindTargets...), dataDir) {
		// The innermost mount holding target.
		best := -1
		for i, m := range ms {
			if (m.point == "/" || under(target, m.point)) && (best < 0 || len(m.point) >= len(ms[best].point)) {
				best = i
			}
		}
		if best >= 0 && strings.Contains(ms[best].optional, "shared:") && !seen[ms[best].point] {
			seen[ms[best].point] = true
			out = append(out, ms[best].point)
		}
	}
	return out
}

func under(p, dir string) bool {
	return p == dir || strings.HasPrefix(p, dir+"/")
}

// mountsUnder lists the host's mount points at or under dir, innermost (last mounted) first.
func mountsUnder(dir string) []string {
	var out []string
	ms := readMounts("self")
	for i := len(ms) - 1; i >= 0; i-- {
		if under(ms[i].point, dir) {
			out = append(out, ms[i].point)
		}
	}
	return out
}

func unmountAll(dir string) error {
	for try := 0; try < 20; try++ {
		ps := mountsUnder(dir)
		if len(ps) == 0 {
			return nil
		}
		for _, p := range ps {
			if err := syscall.Unmount(p, 0); err != nil {
				if errors.Is(err, syscall.EINVAL) || errors.Is(err, syscall.ENOENT) {
					continue // already gone (propagation)
				}
				_ = syscall.Unmount(p, syscall.MNT_DETACH)
			}
		}
	}
	if ps := mountsUnder(dir); len(ps) > 0 {
		return fmt.Errorf("still mounted: %s", strings.Join(ps, " "))
	}
	return nil
}

// cgroupMounts: every cgroup (v1) and cgroup2 mount point, v1 ones flagged.
func cgroupMounts() (all []string, v1 []string) {
	seen := map[string]bool{}
	for _, m := range readMounts("self") {
		if (m.fstype == "cgroup" || m.fstype == "cgroup2") && !seen[m.point] {
			seen[m.point] = true
			all = append(all, m.point)
			if m.fstype == "cgroup" {
				v1 = append(v1, m.point)
			}
		}
	}
	return all, v1
}

// cgroupProcs: every PID in the cgroup tree at dir.
func cgroupProcs(dir string) []int {
	var out []int
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if d.IsDir() {
			b, err := os.ReadFile(filepath.Join(p, "cgroup.procs"))
			if err == nil {
				for _, f := range strings.Fields(string(b)) {
					if pid, err := strconv.Atoi(f); err == nil {
						out = append(out, pid)
					}
				}
			}
		}
		return nil
	})
	return out
}

// removeCgroupTree rmdirs a cgroup and all below it, deepest first.
func removeCgroupTree(dir string) error {
	var dirs []string
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			dirs = append(dirs, p)
		}
		return nil
	})
	sort.Slice(dirs, func(i, j int) bool { return len(dirs[i]) > len(dirs[j]) })
	var last error
	for _, d := range dirs {
		var err error
		for try := 0; try < 50; try++ {
			if err = syscall.Rmdir(d); err == nil || errors.Is(err, syscall.ENOENT) {
				err = nil
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if err != nil {
			last = fmt.Errorf("rmdir %s: %w", d, err)
		}
	}
	return last
}

// ---------------------------------------------------------------- iptables

func iptablesNFT() bool {
	out, err := run("iptables", "--version")
	return err == nil && strings.Contains(out, "nf_tables")
}

func iptables(args ...string) error {
	_, err := run("iptables", append([]string{"-w", "10"}, args...)...)
	return err
}

func chainExists(table, chain string) bool {
	return iptables("-t", table, "-S", chain) == nil
}

// nftTableExists: whether the iptables-nft table exists at all (iptables-save lists it).
func nftTableExists(table string) bool {
	_, err := run("nft", "list", "table", "ip", table)
	return err == nil
}

// iptablesTableEmpty: no rule and no chain of anybody's in the table.
func iptablesTableEmpty(table string) bool {
	out, err := run("iptables-save", "-t", table)
	if err != nil {
		return false
	}
	builtin := map[string]bool{"PREROUTING": true, "INPUT": true, "FORWARD": true, "OUTPUT": true, "POSTROUTING": true}
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "-A ") {
			return false
		}
		if strings.HasPrefix(l, ":") {
			name := strings.Fields(l[1:])[0]
			if !builtin[name] {
				return false
			}
			if !strings.Contains(l, " ACCEPT ") {
				return false // a policy somebody set
			}
		}
	}
	return true
}

// ---------------------------------------------------------------- node setup

type nodeRun struct {
	dataDir    string // the control plane's data dir
	dir        string // DATA/node
	self       string // this executable
	apiPort    int
	server     string
	kubeconfig string // admin
	pki        *pkiFiles
	images     []string
	pauseRef   string

	j        *journal
	sock     string
	sink     net.Listener
	children []*child
}

func (n *nodeRun) path(p ...string) string { return filepath.Join(append([]string{n.dir}, p...)...) }

// preflight refuses to start over what looks like an earlier node that was not torn down.
func nodePreflight(dataDir string) error {
	if os.Geteuid() != 0 {
		return errors.New("--node needs root")
	}
	for _, b := range []string{"containerd", "containerd-shim-runc-v2", "runc", "ctr", "iptables", "iptables-save", "ip"} {
		if _, err := exec.LookPath(b); err != nil {
			return fmt.Errorf("--node needs %s (Debian packages containerd, runc, iptables, iproute2): %v", b, err)
		}
	}
	for _, p := range []string{"bridge", "host-local", "loopback"} {
		if !exists("/usr/lib/cni/" + p) {
			return fmt.Errorf("--node needs /usr/lib/cni/%s (Debian package containernetworking-plugins)", p)
		}
	}
	if iptablesNFT() {
		if _, err := exec.LookPath("nft"); err != nil {
			return fmt.Errorf("--node needs nft with the iptables nf_tables backend (Debian package nftables): %v", err)
		}
	}
	// The node bind-mounts copies over /proc/sys files and scratch dirs over /run, /var/lib
	// and /var/log inside its own mount namespaces. That stays there only while the mounts
	// holding those paths (and the data dir) are private on the host, as on these machines;
	// on a host where they are shared (systemd makes / shared) the binds would reach the host.
	if shared := sharedMounts(dataDir); len(shared) > 0 {
		return fmt.Errorf("--node needs the host's mounts of %s to be private, but %s shared "+
			"(a systemd host?): the node's bind mounts would reach the host", strings.Join(nodeBindTargets, ", "),
			strings.Join(shared, ", "))
	}
	if exists(filepath.Join(dataDir, "node", "journal")) {
		return fmt.Errorf("%s holds the journal of an earlier node: undo it first with `kcp node-down --data-dir %s`",
			filepath.Join(dataDir, "node"), dataDir)
	}
	if _, err := net.InterfaceByName(nodeBridge); err == nil {
		return fmt.Errorf("link %s already exists (an earlier node not torn down? `kcp node-down --data-dir DIR`)", nodeBridge)
	}
	all, _ := cgroupMounts()
	for _, m := range all {
		if exists(filepath.Join(m, nodeCgroupRoot)) {
			return fmt.Errorf("cgroup %s already exists (an earlier node not torn down?)", filepath.Join(m, nodeCgroupRoot))
		}
	}
	if out, err := run("iptables-save"); err == nil && strings.Contains(out, nodeChainPrefix) {
		return fmt.Errorf("iptables already has %s* chains (an earlier node not torn down?)", nodeChainPrefix)
	}
	return nil
}

// prepare makes everything the node's processes need, journaling each thing first.
func (n *nodeRun) prepare() error {
	if err := os.MkdirAll(n.dir, 0o700); err != nil {
		return err
	}
	j, err := openJournal(n.path("journal"))
	if err != nil {
		return err
	}
	n.j = j
	st, _, _ := procStat(os.Getpid())
	if err := j.add(jentry{Op: jOwner, PID: os.Getpid(), Start: st}); err != nil {
		return err
	}

	// Kernel settings, before anything.
	before := snapshotSysctls()
	b, _ := json.MarshalIndent(before, "", "  ")
	if err := os.WriteFile(n.path("sysctls-before.json"), b, 0o644); err != nil {
		return err
	}
	if err := j.add(jentry{Op: jSysctls, Path: n.path("sysctls-before.json")}); err != nil {
		return err
	}
	logf("node: kernel settings before: %s", formatSysctls(before))

	// Node identity.
	if err := n.writeNodeCredentials(); err != nil {
		return fmt.Errorf("node credentials: %w", err)
	}

	// cgroupRoot in every v1 hierarchy (the kubelet checks it exists), cpuset filled in.
	if err := j.add(jentry{Op: jCgroup, Name: nodeCgroupRoot}); err != nil {
		return err
	}
	_, v1 := cgroupMounts()
	if len(v1) == 0 {
		return errors.New("no cgroup v1 hierarchy mounted (this node setup is for cgroup v1 machines)")
	}
	for _, m := range v1 {
		d := filepath.Join(m, nodeCgroupRoot)
		if err := os.Mkdir(d, 0o755); err != nil {
			return fmt.Errorf("cgroup: %w", err)
		}
		for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
			if v, err := os.ReadFile(filepath.Join(m, f)); err == nil {
				if err := os.WriteFile(filepath.Join(d, f), v, 0o644); err != nil {
					return fmt.Errorf("cgroup %s/%s: %w", d, f, err)
				}
			}
		}
	}

	// The bridge: pods' gateway and the host's address for them.
	if err := j.add(jentry{Op: jLink, Name: nodeBridge}); err != nil {
		return err
	}
	for _, c := range [][]string{
		{"link", "add", nodeBridge, "type", "bridge"},
		{"addr", "add", nodeBridgeIP + "/24", "dev", nodeBridge},
	} {
		if _, err := run("ip", c...); err != nil {
			return err
		}
	}
	// Per-interface settings of our own bridge (they go with it): DNAT to 127.0.0.1 needs
	// route_localnet; no IPv6 on it, so nothing IPv6 is routed for pods.
	for k, v := range map[string]string{
		"net/ipv4/conf/" + nodeBridge + "/route_localnet": "1",
		"net/ipv6/conf/" + nodeBridge + "/disable_ipv6":   "1",
	} {
		if err := os.WriteFile("/proc/sys/"+k, []byte(v), 0o644); err != nil && !strings.Contains(k, "ipv6") {
			return fmt.Errorf("%s: %w", k, err)
		}
	}
	if _, err := run("ip", "link", "set", nodeBridge, "up"); err != nil {
		return err
	}

	if err := n.setupIPTables(); err != nil {
		return err
	}

	// The kubelet root dir: bound onto itself and rshared before either namespace is made,
	// so that the volumes the kubelet mounts in its namespace reach containerd's.
	kroot := n.path("kubelet")
	if err := os.MkdirAll(kroot, 0o750); err != nil {
		return err
	}
	if err := j.add(jentry{Op: jMount, Path: kroot}); err != nil {
		return err
	}
	if err := syscall.Mount(kroot, kroot, "", syscall.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind %s: %w", kroot, err)
	}
	if err := syscall.Mount("", kroot, "", syscall.MS_SHARED|syscall.MS_REC, ""); err != nil {
		return fmt.Errorf("make-rshared %s: %w", kroot, err)
	}
	return nil
}

func (n *nodeRun) setupIPTables() error {
	port := strconv.Itoa(n.apiPort)
	dnat := []string{"-d", nodeAPIServiceIP + "/32", "-p", "tcp", "--dport", "443",
		"-j", "DNAT", "--to-destination", "127.0.0.1:" + port}
	type chain struct {
		table, name, base string
		jump              []string // match of the jump rule in base
		rules             [][]string
	}
	chains := []chain{
		// Pods -> the `kubernetes` Service address -> the API server on loopback.
		{"nat", nodeChainPrefix + "PREROUTING", "PREROUTING", []string{"-i", nodeBridge},
			[][]string{dnat}},
		// Host-network pods alike.
		{"nat", nodeChainPrefix + "OUTPUT", "OUTPUT", []string{"-d", nodeAPIServiceIP + "/32"},
			[][]string{dnat}},
		// Nothing from the bridge is forwarded anywhere but the bridge (pod to pod), and
		// nothing else is forwarded onto it.
		{"filter", nodeChainPrefix + "FORWARD", "FORWARD", nil, [][]string{
			{"-i", nodeBridge, "-o", nodeBridge, "-j", "ACCEPT"},
			{"-i", nodeBridge, "-j", "REJECT"},
			{"-o", nodeBridge, "-j", "REJECT"},
		}},
		// route_localnet lets the DNAT above reach the API server on 127.0.0.1; without this
		// guard (kube-proxy's for CVE-2020-8558) a pod could send packets addressed to
		// 127.0.0.0/8 straight to the bridge and reach every loopback service of the host
		// (etcd, the kubelet, the controller manager): only DNATed traffic may.
		{"filter", nodeChainPrefix + "INPUT", "INPUT", []string{"-i", nodeBridge}, [][]string{
			{"-d", "127.0.0.0/8", "-m", "conntrack", "!", "--ctstate", "DNAT", "-j", "DROP"},
		}},
		// Nothing with a pod-network source leaves by another interface than the bridge
		// (loopback is the host talking to itself at 10.244.0.1).
		{"filter", nodeChainPrefix + "OUTPUT", "OUTPUT", []string{"-s", nodePodCIDR}, [][]string{
			{"-o", nodeBridge, "-j", "RETURN"},
			{"-o", "lo", "-j", "RETURN"},
			{"-j", "REJECT"},
		}},
	}
	nft := iptablesNFT()
	seenTable := map[string]bool{}
	for _, c := range chains {
		if nft && !seenTable[c.table] {
			seenTable[c.table] = true
			if !nftTableExists(c.table) {
				if err := n.j.add(jentry{Op: jTable, Table: c.table}); err != nil {
					return err
				}
			}
		}
		if err := n.j.add(jentry{Op: jChain, Table: c.table, Chain: c.name}); err != nil {
			return err
		}
		if err := iptables("-t", c.table, "-N", c.name); err != nil {
			return err
		}
		for _, r := range c.rules {
			if err := iptables(append([]string{"-t", c.table, "-A", c.name}, r...)...); err != nil {
				return err
			}
		}
		jump := append(append([]string{}, c.jump...), "-j", c.name)
		if err := n.j.add(jentry{Op: jJump, Table: c.table, Chain: c.base, Args: jump}); err != nil {
			return err
		}
		if err := iptables(append([]string{"-t", c.table, "-I", c.base, "1"}, jump...)...); err != nil {
			return err
		}
	}
	return nil
}

// scratchOver prepares a bind of a fresh dir in the data dir over host path target inside
// a private mount namespace: the mount point is made on the host if missing (journaled).
func (n *nodeRun) scratchOver(name, target string) (string, error) {
	if !exists(target) {
		// Make (and journal) each missing level, outermost first.
		var missing []string
		for p := target; p != "/" && !exists(p); p = filepath.Dir(p) {
			missing = append([]string{p}, missing...)
		}
		for _, p := range missing {
			if err := n.j.add(jentry{Op: jHostDir, Path: p}); err != nil {
				return "", err
			}
			if err := os.Mkdir(p, 0o755); err != nil {
				return "", err
			}
		}
	}
	src := n.path("scratch", name)
	if err := n.j.add(jentry{Op: jScratch, Path: src}); err != nil {
		return "", err
	}
	if err := os.MkdirAll(src, 0o755); err != nil {
		return "", err
	}
	return src + "=" + target, nil
}

// sysctlCopies writes copies of the given settings' current values; binds of them over
// /proc/sys in a private mount namespace absorb the writes.
func (n *nodeRun) sysctlCopies(who string, names []string) ([]string, error) {
	var binds []string
	d := n.path("sysctl-copies", who)
	if err := os.MkdirAll(d, 0o755); err != nil {
		return nil, err
	}
	for _, k := range names {
		v, err := os.ReadFile("/proc/sys/" + k)
		if err != nil {
			return nil, fmt.Errorf("reading /proc/sys/%s: %w", k, err)
		}
		f := filepath.Join(d, strings.ReplaceAll(k, "/", "."))
		if err := os.WriteFile(f, v, 0o644); err != nil {
			return nil, err
		}
		binds = append(binds, f+"=/proc/sys/"+k)
	}
	return binds, nil
}

func (n *nodeRun) startProc(name string, argv []string, env []string, privateMounts bool, logPath string, exits chan<- exitEvent) (*child, error) {
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr, cmd.Stdin = f, f, nil
	cmd.Env = env
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if privateMounts {
		// A new mount namespace from clone(2), propagation unchanged (unlike
		// Unshareflags, with which Go makes every mount rprivate): the kubelet root's
		// shared peer group reaches into it, and every other mount of this machine is
		// private already, so nothing mounted inside reaches the host.
		cmd.SysProcAttr.Cloneflags = syscall.CLONE_NEWNS
	}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, err
	}
	pid := cmd.Process.Pid
	st, _, _ := procStat(pid)
	jerr := n.j.add(jentry{Op: jProc, Name: name, PID: pid, Start: st})
	if privateMounts {
		if ino := nsIno(fmt.Sprintf("/proc/%d/ns/mnt", pid)); ino != 0 && ino != nsIno("/proc/self/ns/mnt") {
			if err := n.j.add(jentry{Op: jMntNS, Name: name, Ino: ino}); err != nil && jerr == nil {
				jerr = err
			}
		}
	}
	c := watchChild(name, cmd, logPath, f, exits)
	n.children = append(n.children, c)
	if jerr != nil {
		return c, jerr
	}
	return c, nil
}

func nodeEnv(extra ...string) []string {
	return append([]string{
		"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"HOME=/root",
		"LANG=C.UTF-8",
	}, extra...)
}

// startContainerd writes containerd's and CNI's config and starts containerd in a private
// mount namespace.
func (n *nodeRun) startContainerd(exits chan<- exitEvent) error {
	cd := n.path("containerd")
	// No pod of an earlier run of this data dir is alive: its address reservations go.
	_ = os.RemoveAll(filepath.Join(cd, "cni-ipam"))
	for _, d := range []string{"root", "state", "runc", "tmp", "opt", "cni-ipam"} {
		if err := os.MkdirAll(filepath.Join(cd, d), 0o711); err != nil {
			return err
		}
	}
	netd := n.path("cni", "net.d")
	if err := os.MkdirAll(netd, 0o755); err != nil {
		return err
	}
	conflist := map[string]any{
		"cniVersion": "1.0.0",
		"name":       "kcp-node",
		"plugins": []any{map[string]any{
			"type":             "bridge",
			"bridge":           nodeBridge,
			"isGateway":        true,
			"isDefaultGateway": false,
			"ipMasq":           false,
			"hairpinMode":      false,
			"ipam": map[string]any{
				"type":    "host-local",
				"dataDir": filepath.Join(cd, "cni-ipam"),
				"ranges":  []any{[]any{map[string]any{"subnet": nodePodCIDR, "gateway": nodeBridgeIP}}},
				// Only the Service range: pods have no default route, nothing leaves.
				"routes": []any{map[string]any{"dst": nodeServiceCIDR}},
			},
		}},
	}
	b, _ := json.MarshalIndent(conflist, "", "  ")
	if err := os.WriteFile(filepath.Join(netd, "10-kcp-node.conflist"), b, 0o644); err != nil {
		return err
	}

	// Image pulls: every registry host is mirrored to a loopback port on which kcp accepts
	// and closes at once, and the proxy for anything else (containerd falls back to the
	// registry's own host after its mirrors) is the same port: a missing image fails at
	// once, and no pull ever leaves the machine.
	sink, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	n.sink = sink
	go func() {
		for {
			c, err := sink.Accept()
			if err != nil {
				return
			}
			_ = c.Close()
		}
	}()
	sinkURL := "http://" + sink.Addr().String()

	n.sock = filepath.Join(cd, "containerd.sock")
	var mirrors strings.Builder
	for _, h := range []string{"*", "docker.io", "registry-1.docker.io", "registry.k8s.io", "k8s.gcr.io", "gcr.io",
		"ghcr.io", "quay.io", "public.ecr.aws", "mcr.microsoft.com", "localhost"} {
		fmt.Fprintf(&mirrors, "    [plugins.\"io.containerd.grpc.v1.cri\".registry.mirrors.%q]\n      endpoint = [%q]\n", h, sinkURL)
	}
	config := fmt.Sprintf(`version = 2
root = %q
state = %q
oom_score = 0
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = %q
[ttrpc]
  address = %q
[debug]
  address = ""
  level = "info"
[metrics]
  address = ""

[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = %q
  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = %q
    restrict_oom_score_adj = true
    netns_mounts_under_state_dir = true
    enable_selinux = false
    disable_apparmor = true
    stream_server_address = "127.0.0.1"
    stream_server_port = "0"
    enable_tls_streaming = false
    [plugins."io.containerd.grpc.v1.cri".containerd]
      snapshotter = "overlayfs"
      default_runtime_name = "runc"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
          SystemdCgroup = false
          Root = %q
    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = "/usr/lib/cni"
      conf_dir = %q
      max_conf_num = 1
    [plugins."io.containerd.grpc.v1.cri".registry]
%s`, filepath.Join(cd, "root"), filepath.Join(cd, "state"), n.sock, n.sock+".ttrpc",
		filepath.Join(cd, "opt"), n.pauseRef, filepath.Join(cd, "runc"), netd, mirrors.String())
	cfgPath := filepath.Join(cd, "config.toml")
	if err := os.WriteFile(cfgPath, []byte(config), 0o644); err != nil {
		return err
	}

	// Inside its mount namespace: a copy of ip_forward (the bridge plugin writes 1 to it),
	// and scratch dirs over the host paths containerd 1.6 and libcni write to regardless of
	// configuration (CNI results cache; shim sockets in /run/containerd/s).
	binds, err := n.sysctlCopies("containerd", []string{"net/ipv4/ip_forward"})
	if err != nil {
		return err
	}
	for _, s := range []struct{ name, target string }{
		{"var-lib-cni", "/var/lib/cni"},
		{"run-containerd", "/run/containerd"},
	} {
		bind, err := n.scratchOver(s.name, s.target)
		if err != nil {
			return err
		}
		binds = append(binds, bind)
	}
	if err := n.j.add(jentry{Op: jSocket, Path: n.sock}); err != nil {
		return err
	}
	argv := []string{n.self, "nsexec"}
	for _, b := range binds {
		argv = append(argv, "--bind", b)
	}
	cbin, _ := exec.LookPath("containerd")
	argv = append(argv, "--", cbin, "--config", cfgPath)
	env := nodeEnv("TMPDIR="+filepath.Join(cd, "tmp"),
		"HTTP_PROXY="+sinkURL, "HTTPS_PROXY="+sinkURL, "http_proxy="+sinkURL, "https_proxy="+sinkURL)
	c, err := n.startProc("containerd", argv, env, true, n.path("containerd.log"), exits)
	if err != nil {
		return fmt.Errorf("starting containerd: %w", err)
	}
	logf("node: containerd starting (pid %d, socket %s, log %s)", c.cmd.Process.Pid, n.sock, c.logPath)
	return nil
}

func (n *nodeRun) containerdUp() bool {
	c, err := net.DialTimeout("unix", n.sock, time.Second)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

func (n *nodeRun) importImages() error {
	for _, img := range n.images {
		cmd := exec.Command("ctr", "--address", n.sock, "-n", "k8s.io", "images", "import", img)
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		cmd.Env = nodeEnv("TMPDIR=" + n.path("containerd", "tmp"))
		out, err := cmd.CombinedOutput()
		if err != nil {
			return fmt.Errorf("ctr images import %s: %v: %s", img, err, strings.TrimSpace(string(out)))
		}
		logf("node: imported %s: %s", img, strings.TrimSpace(string(out)))
	}
	// Without its sandbox image no pod starts (and it is never pulled): say so now.
	out, err := run("ctr", "--address", n.sock, "-n", "k8s.io", "images", "ls", "-q")
	if err != nil {
		return err
	}
	for _, l := range strings.Fields(out) {
		if l == n.pauseRef {
			return nil
		}
	}
	return fmt.Errorf("the sandbox image %s is not in the node's containerd: import it with --node-image ARCHIVE "+
		"(tests/control-plane/kcp.sh builds it from pause/pause.c)", n.pauseRef)
}

func (n *nodeRun) startScheduler(exits chan<- exitEvent) error {
	args := []string{n.self, "kube-scheduler",
		"--kubeconfig=" + n.kubeconfig,
		"--authentication-kubeconfig=" + n.kubeconfig,
		"--authorization-kubeconfig=" + n.kubeconfig,
		"--leader-elect=false",
		"--bind-address=127.0.0.1",
		fmt.Sprintf("--secure-port=%d", mustFreePort()),
		"--cert-dir=" + n.path("scheduler-certs"),
		"--profiling=false",
		"--v=1",
	}
	c, err := n.startProc("kube-scheduler", args, os.Environ(), false, n.path("kube-scheduler.log"), exits)
	if err != nil {
		return fmt.Errorf("starting kube-scheduler: %w", err)
	}
	logf("node: kube-scheduler starting (log %s)", c.logPath)
	return nil
}

func (n *nodeRun) startKubelet(exits chan<- exitEvent) error {
	for _, d := range []string{"pod-logs", "volume-plugins", "kubelet-pki", "tmp"} {
		if err := os.MkdirAll(n.path(d), 0o750); err != nil {
			return err
		}
	}
	cfg := fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: 127.0.0.1
port: %d
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: %d
containerRuntimeEndpoint: unix://%s
cgroupDriver: cgroupfs
cgroupRoot: /%s
cgroupsPerQOS: true
failCgroupV1: false
failSwapOn: false
oomScoreAdj: 0
makeIPTablesUtilChains: false
protectKernelDefaults: false
podLogsDir: %s
volumePluginDir: %s
resolvConf: ""
registerNode: true
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: true
  x509:
    clientCAFile: %s
authorization:
  mode: Webhook
evictionHard:
  memory.available: "10Mi"
  nodefs.available: "1%%"
  nodefs.inodesFree: "1%%"
  imagefs.available: "1%%"
  imagefs.inodesFree: "1%%"
evictionPressureTransitionPeriod: 10s
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
imageMinimumGCAge: 24h
serializeImagePulls: false
nodeStatusUpdateFrequency: 5s
syncFrequency: 10s
fileCheckFrequency: 1h
shutdownGracePeriod: 0s
`, mustFreePort(), mustFreePort(), n.sock, nodeCgroupRoot, n.path("pod-logs"), n.path("volume-plugins"), n.pki.caCert)
	cfgPath := n.path("kubelet-config.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		return err
	}
	binds, err := n.sysctlCopies("kubelet", kubeletSysctls)
	if err != nil {
		return err
	}
	// Paths the kubelet writes whatever its root dir: the device plugins' socket dir, the
	// container log symlinks, and util-linux mount's utab (the kubelet mounts tmpfs with it).
	for _, s := range []struct{ name, target string }{
		{"var-lib-kubelet", "/var/lib/kubelet"},
		{"var-log-containers", "/var/log/containers"},
		{"run-mount", "/run/mount"},
	} {
		bind, err := n.scratchOver(s.name, s.target)
		if err != nil {
			return err
		}
		binds = append(binds, bind)
	}
	argv := []string{n.self, "nsexec"}
	for _, b := range binds {
		argv = append(argv, "--bind", b)
	}
	argv = append(argv, "--", n.self, "kubelet",
		"--config="+cfgPath,
		"--kubeconfig="+n.path("kubelet.kubeconfig"),
		"--root-dir="+n.path("kubelet"),
		"--cert-dir="+n.path("kubelet-pki"),
		"--hostname-override="+nodeName,
		"--v=1",
	)
	c, err := n.startProc("kubelet", argv, nodeEnv("TMPDIR="+n.path("tmp")), true, n.path("kubelet.log"), exits)
	if err != nil {
		return fmt.Errorf("starting the kubelet: %w", err)
	}
	logf("node: kubelet starting (pid %d, log %s)", c.cmd.Process.Pid, c.logPath)
	return nil
}

// nodeReady: the Node is Ready and its not-ready taint is gone (pods can schedule).
func nodeReady(hc *http.Client, server string) (ready bool, why string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, server+"/api/v1/nodes/"+nodeName, nil)
	resp, err := hc.Do(req)
	if err != nil {
		return false, err.Error()
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, resp.Body)
		return false, "not registered"
	}
	var node struct {
		Spec struct {
			Taints []struct{ Key, Effect string } `json:"taints"`
		} `json:"spec"`
		Status struct {
			Conditions []struct{ Type, Status, Reason, Message string } `json:"conditions"`
		} `json:"status"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&node); err != nil {
		return false, err.Error()
	}
	isReady := false
	for _, c := range node.Status.Conditions {
		if c.Type == "Ready" {
			if c.Status != "True" {
				return false, "NotReady: " + c.Message
			}
			isReady = true
		}
	}
	if !isReady {
		return false, "no Ready condition"
	}
	for _, t := range node.Spec.Taints {
		if t.Key == "node.kubernetes.io/not-ready" || t.Key == "node.kubernetes.io/unreachable" {
			return false, "taint " + t.Key
		}
	}
	return true, ""
}

func (n *nodeRun) writeNodeCredentials() error {
	caPEM, err := os.ReadFile(n.pki.caCert)
	if err != nil {
		return err
	}
	keyPEM, err := os.ReadFile(n.pki.caKey)
	if err != nil {
		return err
	}
	cb, _ := pem.Decode(caPEM)
	kb, _ := pem.Decode(keyPEM)
	if cb == nil || kb == nil {
		return errors.New("cannot decode the CA")
	}
	ca, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		return err
	}
	caKey, err := x509.ParseECPrivateKey(kb.Bytes)
	if err != nil {
		return err
	}
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	now := time.Now().Add(-time.Hour)
	der, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: "system:node:" + nodeName, Organization: []string{"system:nodes"}},
		NotBefore:    now,
		NotAfter:     now.Add(10 * 365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}, ca, &k.PublicKey, caKey)
	if err != nil {
		return err
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	kder, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		return err
	}
	nodeKeyPEM := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
	kc := kubeconfigYAML(n.server, "node", caPEM, certPEM, nodeKeyPEM)
	return os.WriteFile(n.path("kubelet.kubeconfig"), kc, 0o600)
}

// ---------------------------------------------------------------- teardown

// nodeTeardown undoes what the journal in dir lists: processes first (the kubelet, the
// scheduler, the containers, the shims, containerd, anything left in the node's mount
// namespaces), then in reverse order of making: mounts, iptables, the bridge, cgroups, host
// dirs, scratch dirs. It is idempotent. It returns what could not be undone.
func nodeTeardown(dir string) []string {
	entries, err := readJournal(filepath.Join(dir, "journal"))
	if err != nil {
		if os.IsNotExist(err) {
			return nil
		}
		return []string{err.Error()}
	}
	var problems []string
	bad := func(format string, a ...any) {
		msg := fmt.Sprintf(format, a...)
		problems = append(problems, msg)
		logf("node teardown: %s", msg)
	}

	// ---- processes
	nsInos := map[uint64]bool{}
	var socks []string
	var cgroupNames []string
	for _, e := range entries {
		switch e.Op {
		case jMntNS:
			nsInos[e.Ino] = true
		case jSocket:
			socks = append(socks, e.Path)
		case jCgroup:
			cgroupNames = append(cgroupNames, e.Name)
		}
	}
	allCg, _ := cgroupMounts()
	// killFound SIGKILLs the containers' processes (those in the cgroupRoot tree) and, unless
	// containersOnly, the shims and anything else of the node in its mount namespaces. The
	// containers go first, so that their shims (still alive) reap them.
	var killed [][2]uint64 // PID, start time
	killFound := func(containersOnly bool) int {
		var pids []int
		for _, name := range cgroupNames {
			for _, m := range allCg {
				pids = append(pids, cgroupProcs(filepath.Join(m, name))...)
			}
		}
		if !containersOnly {
			for _, s := range socks {
				pids = append(pids, shimPIDs(s)...)
			}
			pids = append(pids, mntnsPIDs(nsInos, ownerStart(entries))...)
		}
		n := 0
		seen := map[int]bool{}
		for _, pid := range pids {
			if seen[pid] || pid == os.Getpid() || pid <= 1 {
				continue
			}
			seen[pid] = true
			if alive(pid, 0) {
				st, _, _ := procStat(pid)
				_ = syscall.Kill(pid, syscall.SIGKILL)
				killed = append(killed, [2]uint64{uint64(pid), st})
				n++
			}
		}
		return n
	}
	// The kubelet and the scheduler first (no more restarts of anything), politely.
	for i := len(entries) - 1; i >= 0; i-- {
		e := entries[i]
		if e.Op == jProc && e.Name != "containerd" {
			if !stopProc(e.PID, e.Start, syscall.SIGTERM, 10*time.Second) {
				bad("%s (pid %d) does not die", e.Name, e.PID)
			}
		}
	}
	// Containers, shims, then containerd, then whatever is left in the namespaces.
	for try := 0; try < 50 && killFound(true) > 0; try++ {
		time.Sleep(100 * time.Millisecond)
	}
	for try := 0; try < 50 && killFound(false) > 0; try++ {
		time.Sleep(100 * time.Millisecond)
	}
	for i := len(entries) - 1; i >= 0; i-- {
		e := entries[i]
		if e.Op == jProc && e.Name == "containerd" {
			if !stopProc(e.PID, e.Start, syscall.SIGTERM, 10*time.Second) {
				bad("%s (pid %d) does not die", e.Name, e.PID)
			}
		}
	}
	for try := 0; try < 50 && killFound(false) > 0; try++ {
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond)
	if killFound(false) > 0 {
		time.Sleep(time.Second)
		if killFound(false) > 0 {
			bad("processes of the node's containers, shims or namespaces survive SIGKILL")
		}
	}

	// ---- the rest, in reverse order of making
	for i := len(entries) - 1; i >= 0; i-- {
		e := entries[i]
		switch e.Op {
		case jMount:
			if err := unmountAll(e.Path); err != nil {
				bad("unmount %s: %v", e.Path, err)
			}
		case jJump:
			for k := 0; k < 10; k++ {
				if iptables(append([]string{"-t", e.Table, "-D", e.Chain}, e.Args...)...) != nil {
					break
				}
			}
		case jChain:
			if chainExists(e.Table, e.Chain) {
				if err := iptables("-t", e.Table, "-F", e.Chain); err != nil {
					bad("%v", err)
				}
				// A jump somebody else added to it would keep it: removed above if ours.
				if err := iptables("-t", e.Table, "-X", e.Chain); err != nil {
					bad("%v", err)
				}
			}
		case jTable:
			// iptables-nft made this table for our chains; remove it if nobody else uses it.
			if nftTableExists(e.Table) {
				if iptablesTableEmpty(e.Table) {
					if _, err := run("nft", "delete", "table", "ip", e.Table); err != nil {
						bad("%v", err)
					}
				} else {
					logf("node teardown: iptables table %s was made for the node but now holds other rules; left", e.Table)
				}
			}
		case jLink:
			if out, err := run("ip", "-o", "link", "show", "master", e.Name); err == nil {
				for _, l := range strings.Split(out, "\n") {
					f := strings.Fields(l)
					if len(f) >= 2 {
						name := strings.TrimSuffix(f[1], ":")
						if k := strings.IndexByte(name, '@'); k >= 0 {
							name = name[:k]
						}
						if _, err := run("ip", "link", "del", name); err != nil && linkExists(name) {
							bad("%v", err)
						}
					}
				}
			}
			if linkExists(e.Name) {
				if _, err := run("ip", "link", "del", e.Name); err != nil {
					bad("%v", err)
				}
			}
		case jCgroup:
			for _, m := range allCg {
				d := filepath.Join(m, e.Name)
				if exists(d) {
					if err := removeCgroupTree(d); err != nil {
						bad("%v", err)
					}
				}
			}
		case jHostDir:
			if exists(e.Path) {
				if len(mountsUnder(e.Path)) > 0 {
					bad("%s is mounted on; not removed", e.Path)
				} else if err := os.Remove(e.Path); err != nil {
					bad("remove %s (made by the node; expected empty): %v", e.Path, err)
				}
			}
		case jScratch:
			if exists(e.Path) {
				if len(mountsUnder(e.Path)) > 0 {
					bad("%s is mounted on; not removed", e.Path)
				} else if err := os.RemoveAll(e.Path); err != nil {
					bad("remove %s: %v", e.Path, err)
				}
			}
		}
	}

	// Shims whose containerd died with a killed kcp are orphans of PID 1: they stay zombies
	// until init reaps them. Wait for that a little, so that ps shows nothing afterwards.
	for deadline := time.Now().Add(15 * time.Second); ; {
		var left []uint64
		for _, k := range killed {
			if st, _, ok := procStat(int(k[0])); ok && st == k[1] {
				left = append(left, k[0])
			}
		}
		if len(left) == 0 {
			break
		}
		if time.Now().After(deadline) {
			logf("node teardown: %d killed process(es) not reaped yet by their parent (zombies): %v", len(left), left)
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	return problems
}

func linkExists(name string) bool {
	_, err := net.InterfaceByName(name)
	return err == nil
}

// nodeVerify checks that nothing of the node is left and compares the kernel settings
// with those from before; it prints `kernel settings before: ... after: ...`.
func nodeVerify(dataDir, journalPath string) []string {
	entries, err := readJournal(journalPath)
	if err != nil {
		if os.IsNotExist(err) {
			return nil
		}
		return []string{err.Error()}
	}
	var problems []string
	bad := func(format string, a ...any) { problems = append(problems, fmt.Sprintf(format, a...)) }
	nsInos := map[uint64]bool{}
	for _, e := range entries {
		switch e.Op {
		case jProc:
			if alive(e.PID, e.Start) {
				bad("process %s (pid %d) is still running", e.Name, e.PID)
			}
		case jMntNS:
			nsInos[e.Ino] = true
		case jSocket:
			if pids := shimPIDs(e.Path); len(pids) > 0 {
				bad("containerd shims still running: %v", pids)
			}
		case jMount:
			if ms := mountsUnder(e.Path); len(ms) > 0 {
				bad("still mounted: %v", ms)
			}
		case jChain:
			if chainExists(e.Table, e.Chain) {
				bad("iptables chain %s/%s still exists", e.Table, e.Chain)
			}
		case jLink:
			if linkExists(e.Name) {
				bad("link %s still exists", e.Name)
			}
		case jCgroup:
			all, _ := cgroupMounts()
			for _, m := range all {
				if exists(filepath.Join(m, e.Name)) {
					bad("cgroup %s still exists", filepath.Join(m, e.Name))
				}
			}
		case jHostDir, jScratch:
			if exists(e.Path) {
				bad("%s still exists", e.Path)
			}
		}
	}
	if pids := mntnsPIDs(nsInos, ownerStart(entries)); len(pids) > 0 {
		bad("processes still in the node's mount namespaces: %v", pids)
	}
	if ms := mountsUnder(dataDir); len(ms) > 0 {
		bad("still mounted under %s: %v", dataDir, ms)
	}
	if out, err := run("iptables-save"); err == nil && strings.Contains(out, nodeChainPrefix) {
		bad("iptables-save still shows %s chains", nodeChainPrefix)
	}
	for _, e := range entries {
		if e.Op != jSysctls {
			continue
		}
		b, err := os.ReadFile(e.Path)
		if err != nil {
			bad("kernel settings from before: %v", err)
			continue
		}
		var before map[string]string
		if err := json.Unmarshal(b, &before); err != nil {
			bad("kernel settings from before: %v", err)
			continue
		}
		after := snapshotSysctls()
		fmt.Fprintf(os.Stderr, "kernel settings before: %s after: %s\n", formatSysctls(before), formatSysctls(after))
		for _, k := range nodeSysctls {
			if before[k] != after[k] {
				bad("KERNEL SETTING CHANGED: %s was %q, is %q", k, before[k], after[k])
			}
		}
	}
	return problems
}

// downNode tears the node down and verifies; used by `up` on exit and by `node-down`.
// When all is clean the journal becomes journal.done: a later `up --node` on the same data
// dir may start (a kept data dir keeps containerd's images), and `node-down` only checks.
func downNode(dataDir string) error {
	start := time.Now()
	jpath := filepath.Join(dataDir, "node", "journal")
	problems := nodeTeardown(filepath.Join(dataDir, "node"))
	problems = append(problems, nodeVerify(dataDir, jpath)...)
	if len(problems) > 0 {
		for _, p := range problems {
			logf("NODE NOT CLEAN: %s", p)
		}
		return fmt.Errorf("%d problem(s) after tearing the node down", len(problems))
	}
	if err := os.Rename(jpath, jpath+".done"); err != nil && !os.IsNotExist(err) {
		return err
	}
	logf("node: torn down in %.1fs; nothing left, kernel settings unchanged", time.Since(start).Seconds())
	return nil
}

// `kcp node-down --data-dir D`: for a node whose kcp was killed.
func nodeDownCmd(args []string) int {
	fs := flag.NewFlagSet("node-down", flag.ContinueOnError)
	dataDir := fs.String("data-dir", "", "the data dir of `kcp up --node`")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *dataDir == "" {
		logf("node-down: --data-dir is required")
		return 2
	}
	d, err := filepath.Abs(*dataDir)
	if err != nil {
		logf("%v", err)
		return 2
	}
	jpath := filepath.Join(d, "node", "journal")
	entries, err := readJournal(jpath)
	if err != nil {
		if !os.IsNotExist(err) {
			logf("node-down: %v", err)
			return 1
		}
		// Torn down already (by kcp on SIGTERM): check that it stayed so.
		if _, err := os.Stat(jpath + ".done"); err != nil {
			logf("node-down: no node journal in %s; nothing to do", d)
			return 0
		}
		if problems := nodeVerify(d, jpath+".done"); len(problems) > 0 {
			for _, p := range problems {
				logf("NODE NOT CLEAN: %s", p)
			}
			return 1
		}
		logf("node-down: the node in %s was torn down already; nothing of it is left, kernel settings unchanged", d)
		return 0
	}
	// A kcp that still runs this node tears it down itself on SIGTERM: let it.
	for _, e := range entries {
		if e.Op == jOwner && e.PID != os.Getpid() && alive(e.PID, e.Start) {
			logf("node-down: kcp (pid %d) still runs this node; sending SIGTERM", e.PID)
			if !stopProc(e.PID, e.Start, syscall.SIGTERM, 60*time.Second) {
				logf("node-down: kcp (pid %d) does not die", e.PID)
			}
		}
	}
	if err := downNode(d); err != nil {
		logf("node-down: %v", err)
		return 1
	}
	return 0
}

// `kcp nsexec [--bind SRC=DST]... -- PROG ARGS...`: run by kcp as the first process of a
// new mount namespace (clone with CLONE_NEWNS): bind-mounts SRC over DST there, then
// executes PROG in place. Refuses to mount anything unless its mount namespace differs
// from its parent's.
func nsexec(args []string) int {
	var binds [][2]string
	i := 0
	for ; i < len(args); i++ {
		if args[i] == "--" {
			i++
			break
		}
		if args[i] == "--bind" && i+1 < len(args) {
			src, dst, ok := strings.Cut(args[i+1], "=")
			if !ok {
				logf("nsexec: --bind takes SRC=DST, got %q", args[i+1])
				return 2
			}
			binds = append(binds, [2]string{src, dst})
			i++
			continue
		}
		logf("nsexec: unexpected argument %q", args[i])
		return 2
	}
	if i >= len(args) {
		logf("nsexec: no program given")
		return 2
	}
	mine, err1 := os.Readlink("/proc/self/ns/mnt")
	parent, err2 := os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", os.Getppid()))
	if err1 != nil || err2 != nil || mine == parent {
		logf("nsexec: not in a mount namespace of its own (%s vs parent %s); refusing to mount", mine, parent)
		return 1
	}
	for _, b := range binds {
		if err := syscall.Mount(b[0], b[1], "", syscall.MS_BIND, ""); err != nil {
			logf("nsexec: bind %s over %s: %v", b[0], b[1], err)
			return 1
		}
	}
	prog, err := exec.LookPath(args[i])
	if err != nil {
		logf("nsexec: %v", err)
		return 1
	}
	err = syscall.Exec(prog, args[i:], os.Environ())
	logf("nsexec: exec %s: %v", prog, err)
	return 1
}
