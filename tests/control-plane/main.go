// Command kcp is a multi-call binary that runs a real, minimal Kubernetes
// control plane (embedded etcd + kube-apiserver + kube-controller-manager)
// on loopback for integration tests, optionally with a real node
// (kube-scheduler + kubelet + containerd, see node.go), and also serves as kubectl.
//
//	kcp up [--data-dir D] [--kubeconfig PATH] [--port N] [--keep] [--exit-on-stdin-close]
//	       [--node [--node-image ARCHIVE]... [--pause-image REF]]
//	kcp node-down --data-dir D   (undo a node whose kcp was killed; check nothing is left)
//	kcp kube-apiserver ARGS...
//	kcp kube-controller-manager ARGS...
//	kcp kube-scheduler ARGS...
//	kcp kubelet ARGS...
//	kcp kubectl ARGS...          (or invoked through a symlink named "kubectl")
//
// Each Kubernetes component runs in its own process (the launcher re-execs
// itself), because their command constructors install process-wide signal
// handlers that may only be set up once per process.
package main

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"
	_ "time/tzdata" // for CronJob time zone support

	"go.etcd.io/etcd/server/v3/embed"
	_ "k8s.io/client-go/plugin/pkg/client/auth"
	"k8s.io/component-base/cli"
	"k8s.io/component-base/logs"
	_ "k8s.io/component-base/logs/json/register"
	_ "k8s.io/component-base/metrics/prometheus/clientgo"
	_ "k8s.io/component-base/metrics/prometheus/version"
	kubectlcmd "k8s.io/kubectl/pkg/cmd"
	kubectlutil "k8s.io/kubectl/pkg/cmd/util"
	apiserverapp "k8s.io/kubernetes/cmd/kube-apiserver/app"
	kcmapp "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	schedulerapp "k8s.io/kubernetes/cmd/kube-scheduler/app"
	kubeletapp "k8s.io/kubernetes/cmd/kubelet/app"
)

// Controllers run by the controller manager. Without --node no kubelet/scheduler
// exists, so workload controllers are left out on purpose (nodeControllers are
// added with --node).
var kcmControllers = []string{
	"garbage-collector-controller",
	"namespace-controller",
	"serviceaccount-controller",
	"serviceaccount-token-controller",
	"root-ca-certificate-publisher-controller",
	"clusterrole-aggregation-controller",
	"validatingadmissionpolicy-status-controller",
}

func init() {
	// Children are started with Pdeathsig, which fires when the *thread* that
	// started them exits; pin main to one OS thread so that only process exit
	// triggers it.
	runtime.LockOSThread()
}

func main() {
	if filepath.Base(os.Args[0]) == "kubectl" {
		runKubectl(os.Args)
	}
	if len(os.Args) < 2 {
		usage()
		os.Exit(2)
	}
	sub, rest := os.Args[1], os.Args[2:]
	switch sub {
	case "kube-apiserver":
		os.Args = append([]string{"kube-apiserver"}, rest...)
		os.Exit(cli.Run(apiserverapp.NewAPIServerCommand()))
	case "kube-controller-manager":
		os.Args = append([]string{"kube-controller-manager"}, rest...)
		os.Exit(cli.Run(kcmapp.NewControllerManagerCommand()))
	case "kube-scheduler":
		os.Args = append([]string{"kube-scheduler"}, rest...)
		os.Exit(cli.Run(schedulerapp.NewSchedulerCommand()))
	case "kubelet":
		os.Args = append([]string{"kubelet"}, rest...)
		os.Exit(cli.Run(kubeletapp.NewKubeletCommand(context.Background())))
	case "kubectl":
		runKubectl(append([]string{"kubectl"}, rest...))
	case "up":
		os.Exit(up(rest))
	case "node-down":
		os.Exit(nodeDownCmd(rest))
	case "nsexec":
		os.Exit(nsexec(rest))
	case "-h", "--help", "help":
		usage()
	default:
		fmt.Fprintf(os.Stderr, "kcp: unknown command %q\n", sub)
		usage()
		os.Exit(2)
	}
}

func usage() {
	fmt.Fprint(os.Stderr, `usage:
  kcp up [--data-dir D] [--kubeconfig PATH] [--port N] [--keep] [--exit-on-stdin-close]
         [--node [--node-image ARCHIVE]... [--pause-image REF]]
  kcp node-down --data-dir D
  kcp kube-apiserver ARGS...
  kcp kube-controller-manager ARGS...
  kcp kube-scheduler ARGS...
  kcp kubelet ARGS...
  kcp kubectl ARGS...   (also when invoked as "kubectl")
`)
}

// runKubectl mirrors k8s.io/kubernetes/cmd/kubectl/kubectl.go.
func runKubectl(args []string) {
	os.Args = args
	logs.GlogSetter(kubectlcmd.GetLogVerbosity(os.Args)) // nolint:errcheck
	command := kubectlcmd.NewDefaultKubectlCommand()
	if err := cli.RunNoErrOutput(command); err != nil {
		kubectlutil.CheckErr(err)
	}
	os.Exit(0)
}

func logf(format string, a ...any) {
	fmt.Fprintf(os.Stderr, "kcp: "+format+"\n", a...)
}

// ---------------------------------------------------------------- launcher

type child struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	done    chan struct{}
	err     error
}

type exitEvent struct {
	c *child
}

type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

func up(args []string) int {
	fs := flag.NewFlagSet("up", flag.ContinueOnError)
	dataDir := fs.String("data-dir", "", "data directory (default: a fresh temp dir)")
	kubeconfig := fs.String("kubeconfig", "", "where to write the admin kubeconfig (default DATA/admin.kubeconfig)")
	port := fs.Int("port", 0, "kube-apiserver secure port on 127.0.0.1 (default: a free port)")
	keep := fs.Bool("keep", false, "keep the data dir on exit")
	exitOnStdin := fs.Bool("exit-on-stdin-close", false, "shut down when stdin reaches EOF")
	readyTimeout := fs.Duration("ready-timeout", 180*time.Second, "how long to wait for the control plane to become ready")
	withNode := fs.Bool("node", false, "also run a node (kube-scheduler, containerd, kubelet) so that pods run; needs root")
	var nodeImages stringList
	fs.Var(&nodeImages, "node-image", "OCI archive to import into the node's containerd before the kubelet starts (repeatable; must include the pause image)")
	pauseRef := fs.String("pause-image", defaultPauseRef, "the node's sandbox image reference (imported with --node-image, never pulled)")
	if err := fs.Parse(args); err != nil {
		return 2
	}

	removeDir := ""
	if *dataDir == "" {
		d, err := os.MkdirTemp("", "kcp-")
		if err != nil {
			logf("mkdtemp: %v", err)
			return 1
		}
		*dataDir = d
	}
	d, err := filepath.Abs(*dataDir)
	if err != nil {
		logf("%v", err)
		return 1
	}
	*dataDir = d
	if !*keep {
		removeDir = d
	}
	if err := os.MkdirAll(d, 0o700); err != nil {
		logf("mkdir %s: %v", d, err)
		return 1
	}
	if *withNode {
		if err := nodePreflight(d); err != nil {
			// The data dir is left as it is: it may hold the journal the message points to.
			logf("%v", err)
			return 1
		}
	}
	if *kubeconfig == "" {
		*kubeconfig = filepath.Join(d, "admin.kubeconfig")
	}
	if kc, err := filepath.Abs(*kubeconfig); err == nil {
		*kubeconfig = kc
	}

	// Shutdown triggers: signals and (optionally) stdin EOF.
	stop := make(chan string, 4)
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		s := <-sigs
		stop <- "signal " + s.String()
	}()
	if *exitOnStdin {
		go func() {
			_, _ = io.Copy(io.Discard, os.Stdin)
			stop <- "stdin closed"
		}()
	}

	var children []*child
	var etcd *embed.Etcd
	var node *nodeRun
	cleanupFailed := false
	cleanup := func() {
		if node != nil {
			// The node first (it needs nothing of the control plane to stop), from its
			// journal; then it is checked: nothing left, kernel settings unchanged.
			if node.sink != nil {
				_ = node.sink.Close()
			}
			node.j.close()
			if err := downNode(d); err != nil {
				logf("%v; what is left is listed in %s/node/journal: retry with `kcp node-down --data-dir %s`", err, d, d)
				cleanupFailed = true
			}
		}
		for i := len(children) - 1; i >= 0; i-- {
			terminate(children[i])
		}
		if etcd != nil {
			etcd.Close()
		}
		if removeDir != "" && !cleanupFailed {
			_ = os.RemoveAll(removeDir)
			if !strings.HasPrefix(*kubeconfig, removeDir+string(os.PathSeparator)) {
				_ = os.Remove(*kubeconfig)
			}
		}
	}
	fail := func(format string, a ...any) int {
		logf(format, a...)
		cleanup()
		return 1
	}

	// ---- PKI
	pki, err := writePKI(d)
	if err != nil {
		return fail("generating certificates: %v", err)
	}

	// ---- ports
	apiPort := *port
	if apiPort == 0 {
		apiPort = mustFreePort()
	}
	etcdClientPort, etcdPeerPort, kcmPort := mustFreePort(), mustFreePort(), mustFreePort()
	server := fmt.Sprintf("https://127.0.0.1:%d", apiPort)

	if err := writeKubeconfig(*kubeconfig, server, pki); err != nil {
		return fail("writing kubeconfig: %v", err)
	}
	if err := os.WriteFile(filepath.Join(d, "env"), []byte(fmt.Sprintf("export KUBECONFIG=%s\n", *kubeconfig)), 0o644); err != nil {
		return fail("writing env: %v", err)
	}

	// ---- etcd
	logf("starting etcd (client port %d)", etcdClientPort)
	etcd, err = startEtcd(d, etcdClientPort, etcdPeerPort)
	if err != nil {
		return fail("starting etcd: %v", err)
	}

	self, err := os.Executable()
	if err != nil {
		return fail("os.Executable: %v", err)
	}
	exits := make(chan exitEvent, 16)

	// ---- kube-apiserver
	apiArgs := []string{
		fmt.Sprintf("--etcd-servers=http://127.0.0.1:%d", etcdClientPort),
		"--bind-address=127.0.0.1",
		"--advertise-address=127.0.0.1",
		fmt.Sprintf("--secure-port=%d", apiPort),
		"--tls-cert-file=" + pki.serverCert,
		"--tls-private-key-file=" + pki.serverKey,
		"--client-ca-file=" + pki.caCert,
		"--authorization-mode=Node,RBAC",
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file=" + pki.saPub,
		"--service-account-signing-key-file=" + pki.saKey,
		"--service-cluster-ip-range=10.0.0.0/24",
		"--cert-dir=" + filepath.Join(d, "apiserver-certs"),
		"--profiling=false",
		"--allow-privileged=true",
		"--endpoint-reconciler-type=none",
		"--enable-priority-and-fairness=false",
		"--v=1",
	}
	if *withNode {
		// kubectl logs/exec: the API server calls the kubelet with a client certificate.
		apiArgs = append(apiArgs, "--kubelet-client-certificate="+pki.adminCert, "--kubelet-client-key="+pki.adminKey)
	}
	ac, err := startChild(self, "kube-apiserver", apiArgs, filepath.Join(d, "kube-apiserver.log"), exits)
	if err != nil {
		return fail("starting kube-apiserver: %v", err)
	}
	children = append(children, ac)
	logf("kube-apiserver starting on %s (log %s)", server, ac.logPath)

	hc, err := adminHTTPClient(pki)
	if err != nil {
		return fail("%v", err)
	}
	deadline := time.Now().Add(*readyTimeout)

	waitFor := func(what string, probe func() bool) (int, bool) {
		for {
			if probe() {
				return 0, true
			}
			select {
			case reason := <-stop:
				logf("%s while waiting for %s; shutting down", reason, what)
				cleanup()
				if cleanupFailed {
					return 1, false
				}
				return 0, false
			case ev := <-exits:
				return childDied(ev.c, cleanup), false
			case <-time.After(250 * time.Millisecond):
			}
			if time.Now().After(deadline) {
				return fail("timed out waiting for %s", what), false
			}
		}
	}

	if rc, ok := waitFor("kube-apiserver /readyz", func() bool { return httpOK(hc, server+"/readyz") }); !ok {
		return rc
	}
	logf("kube-apiserver is ready")

	// ---- kube-controller-manager
	controllers := kcmControllers
	if *withNode {
		controllers = append(append([]string{}, kcmControllers...), nodeControllers...)
	}
	kcmArgs := []string{
		"--kubeconfig=" + *kubeconfig,
		"--authentication-kubeconfig=" + *kubeconfig,
		"--authorization-kubeconfig=" + *kubeconfig,
		"--controllers=" + strings.Join(controllers, ","),
		"--service-account-private-key-file=" + pki.saKey,
		"--root-ca-file=" + pki.caCert,
		"--leader-elect=false",
		"--bind-address=127.0.0.1",
		fmt.Sprintf("--secure-port=%d", kcmPort),
		"--cert-dir=" + filepath.Join(d, "kcm-certs"),
		"--profiling=false",
		"--v=1",
	}
	kc, err := startChild(self, "kube-controller-manager", kcmArgs, filepath.Join(d, "kube-controller-manager.log"), exits)
	if err != nil {
		return fail("starting kube-controller-manager: %v", err)
	}
	children = append(children, kc)
	logf("kube-controller-manager starting (log %s)", kc.logPath)

	// The serviceaccount controller creates default/default; the root CA
	// publisher creates kube-root-ca.crt. Both prove the controller manager
	// has synced its informers and started its controllers.
	if rc, ok := waitFor("default ServiceAccount", func() bool {
		return httpOK(hc, server+"/api/v1/namespaces/default/serviceaccounts/default") &&
			httpOK(hc, server+"/api/v1/namespaces/default/configmaps/kube-root-ca.crt")
	}); !ok {
		return rc
	}

	readyExtra := ""
	if *withNode {
		nodeStart := time.Now()
		node = &nodeRun{dataDir: d, dir: filepath.Join(d, "node"), self: self, apiPort: apiPort, server: server,
			kubeconfig: *kubeconfig, pki: pki, images: nodeImages, pauseRef: *pauseRef}
		if err := node.prepare(); err != nil {
			return fail("node: %v", err)
		}
		if err := node.startContainerd(exits); err != nil {
			return fail("node: %v", err)
		}
		if rc, ok := waitFor("containerd's socket", node.containerdUp); !ok {
			return rc
		}
		if err := node.importImages(); err != nil {
			return fail("node: %v", err)
		}
		if err := node.startScheduler(exits); err != nil {
			return fail("node: %v", err)
		}
		if err := node.startKubelet(exits); err != nil {
			return fail("node: %v", err)
		}
		lastWhy := ""
		if rc, ok := waitFor("the node to be Ready and schedulable", func() bool {
			ok, why := nodeReady(hc, server)
			if why != lastWhy && why != "" {
				logf("node: %s", why)
				lastWhy = why
			}
			return ok
		}); !ok {
			return rc
		}
		logf("node %s Ready and schedulable %.1fs after its start", nodeName, time.Since(nodeStart).Seconds())
		readyExtra = fmt.Sprintf(" node=%s bridge_ip=%s containerd=%s", nodeName, nodeBridgeIP, node.sock)
		env := fmt.Sprintf("export KUBECONFIG=%s\nexport KCP_NODE_NAME=%s\nexport KCP_NODE_BRIDGE_IP=%s\nexport KCP_NODE_CONTAINERD_SOCK=%s\n",
			*kubeconfig, nodeName, nodeBridgeIP, node.sock)
		if err := os.WriteFile(filepath.Join(d, "env"), []byte(env), 0o644); err != nil {
			return fail("writing env: %v", err)
		}
	}

	fmt.Printf("KCP_READY kubeconfig=%s server=%s datadir=%s%s\n", *kubeconfig, server, d, readyExtra)
	_ = os.Stdout.Sync()
	logf("control plane ready: export KUBECONFIG=%s", *kubeconfig)
	logf("logs: %s/kube-apiserver.log %s/kube-controller-manager.log %s/etcd.log", d, d, d)

	select {
	case reason := <-stop:
		logf("%s; shutting down", reason)
		cleanup()
		if cleanupFailed {
			logf("stopped, but the node was not cleaned up completely (see above)")
			return 1
		}
		logf("stopped")
		return 0
	case ev := <-exits:
		return childDied(ev.c, cleanup)
	case err := <-etcd.Err():
		return fail("etcd failed: %v", err)
	}
}

func childDied(c *child, cleanup func()) int {
	logf("%s exited unexpectedly: %v; last lines of %s:", c.name, c.err, c.logPath)
	fmt.Fprint(os.Stderr, tail(c.logPath, 40))
	cleanup()
	return 1
}

func startChild(self, name string, args []string, logPath string, exits chan<- exitEvent) (*child, error) {
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(self, append([]string{name}, args...)...)
	cmd.Stdout = f
	cmd.Stderr = f
	cmd.Stdin = nil
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, err
	}
	return watchChild(name, cmd, logPath, f, exits), nil
}

// watchChild reports the exit of a started child on exits, then closes its log file f.
func watchChild(name string, cmd *exec.Cmd, logPath string, f *os.File, exits chan<- exitEvent) *child {
	c := &child{name: name, cmd: cmd, logPath: logPath, done: make(chan struct{})}
	go func() {
		c.err = cmd.Wait()
		f.Close()
		close(c.done)
		exits <- exitEvent{c}
	}()
	return c
}

func terminate(c *child) {
	select {
	case <-c.done:
		return
	default:
	}
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
	case <-time.After(10 * time.Second):
		logf("%s did not stop after SIGTERM; killing", c.name)
		_ = c.cmd.Process.Kill()
		<-c.done
	}
}

func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(cannot read %s: %v)\n", path, err)
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n") + "\n"
}

func mustFreePort() int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func startEtcd(dataDir string, clientPort, peerPort int) (*embed.Etcd, error) {
	cfg := embed.NewConfig()
	cfg.Name = "kcp"
	cfg.Dir = filepath.Join(dataDir, "etcd")
	cu, _ := url.Parse(fmt.Sprintf("http://127.0.0.1:%d", clientPort))
	pu, _ := url.Parse(fmt.Sprintf("http://127.0.0.1:%d", peerPort))
	cfg.ListenClientUrls = []url.URL{*cu}
	cfg.AdvertiseClientUrls = []url.URL{*cu}
	cfg.ListenPeerUrls = []url.URL{*pu}
	cfg.AdvertisePeerUrls = []url.URL{*pu}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	cfg.Logger = "zap"
	cfg.LogLevel = "warn"
	cfg.LogOutputs = []string{filepath.Join(dataDir, "etcd.log")}
	cfg.UnsafeNoFsync = true // test data only; much faster on slow disks
	cfg.QuotaBackendBytes = 2 << 30
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, err
	}
	select {
	case <-e.Server.ReadyNotify():
		return e, nil
	case err := <-e.Err():
		e.Close()
		return nil, err
	case <-time.After(60 * time.Second):
		e.Server.Stop()
		e.Close()
		return nil, errors.New("etcd took too long to start")
	}
}

// ---------------------------------------------------------------- PKI

type pkiFiles struct {
	caCert, caKey         string
	serverCert, serverKey string
	adminCert, adminKey   string
	saKey, saPub          string
	caPEM, adminCertPEM   []byte
	adminKeyPEM           []byte
}

func writePKI(dir string) (*pkiFiles, error) {
	p := &pkiFiles{
		caCert: filepath.Join(dir, "ca.crt"), caKey: filepath.Join(dir, "ca.key"),
		serverCert: filepath.Join(dir, "apiserver.crt"), serverKey: filepath.Join(dir, "apiserver.key"),
		adminCert: filepath.Join(dir, "admin.crt"), adminKey: filepath.Join(dir, "admin.key"),
		saKey: filepath.Join(dir, "sa.key"), saPub: filepath.Join(dir, "sa.pub"),
	}
	// A data dir kept from an earlier run (--keep) already holds the PKI: reuse it, so
	// that a restarted control plane (same --data-dir and --port) keeps its CA, serving
	// certificate, admin credentials and ServiceAccount keys, and existing clients and
	// kubeconfigs keep working.
	if ok, err := loadPKI(p); ok || err != nil {
		return p, err
	}
	now := time.Now().Add(-time.Hour)
	notAfter := now.Add(10 * 365 * 24 * time.Hour)

	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "kcp-ca"},
		NotBefore:             now,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	caCert, _ := x509.ParseCertificate(caDER)
	p.caPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})
	if err := os.WriteFile(p.caCert, p.caPEM, 0o644); err != nil {
		return nil, err
	}
	if err := writeECKey(p.caKey, caKey); err != nil {
		return nil, err
	}

	issue := func(tmpl *x509.Certificate, certPath, keyPath string) ([]byte, []byte, error) {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, nil, err
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &k.PublicKey, caKey)
		if err != nil {
			return nil, nil, err
		}
		certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
		if err := os.WriteFile(certPath, certPEM, 0o644); err != nil {
			return nil, nil, err
		}
		kb, err := x509.MarshalECPrivateKey(k)
		if err != nil {
			return nil, nil, err
		}
		keyPEM := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb})
		return certPEM, keyPEM, os.WriteFile(keyPath, keyPEM, 0o600)
	}

	if _, _, err := issue(&x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: "kube-apiserver"},
		NotBefore:    now,
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames: []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
			"kubernetes.default.svc.cluster.local"},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("10.0.0.1")},
	}, p.serverCert, p.serverKey); err != nil {
		return nil, err
	}

	p.adminCertPEM, p.adminKeyPEM, err = issue(&x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: "admin", Organization: []string{"system:masters"}},
		NotBefore:    now,
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}, p.adminCert, p.adminKey)
	if err != nil {
		return nil, err
	}

	saKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(p.saKey, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY",
		Bytes: x509.MarshalPKCS1PrivateKey(saKey)}), 0o600); err != nil {
		return nil, err
	}
	pubDER, err := x509.MarshalPKIXPublicKey(&saKey.PublicKey)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(p.saPub, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER}), 0o644); err != nil {
		return nil, err
	}
	return p, nil
}

// loadPKI reads the PKI of an earlier run when every file of it exists. It returns
// false (and no error) when none or only some of the files exist: then a fresh PKI is
// generated.
func loadPKI(p *pkiFiles) (bool, error) {
	for _, f := range []string{p.caCert, p.caKey, p.serverCert, p.serverKey, p.adminCert, p.adminKey, p.saKey, p.saPub} {
		if _, err := os.Stat(f); err != nil {
			return false, nil
		}
	}
	var err error
	if p.caPEM, err = os.ReadFile(p.caCert); err != nil {
		return false, err
	}
	if p.adminCertPEM, err = os.ReadFile(p.adminCert); err != nil {
		return false, err
	}
	if p.adminKeyPEM, err = os.ReadFile(p.adminKey); err != nil {
		return false, err
	}
	if _, err := tls.X509KeyPair(p.adminCertPEM, p.adminKeyPEM); err != nil {
		return false, fmt.Errorf("existing admin certificate in %s: %w", filepath.Dir(p.adminCert), err)
	}
	logf("reusing the certificates and keys in %s", filepath.Dir(p.caCert))
	return true, nil
}

func writeECKey(path string, k *ecdsa.PrivateKey) error {
	b, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		return err
	}
	return os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: b}), 0o600)
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		panic(err)
	}
	return n
}

func writeKubeconfig(path, server string, p *pkiFiles) error {
	buf := kubeconfigYAML(server, "admin", p.caPEM, p.adminCertPEM, p.adminKeyPEM)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, buf, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// kubeconfigYAML is a kubeconfig for the control plane at server with one client-certificate
// user (the admin's, or the node's).
func kubeconfigYAML(server, user string, caPEM, certPEM, keyPEM []byte) []byte {
	b64 := base64.StdEncoding.EncodeToString
	return []byte(fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: kcp
  cluster:
    server: %s
    certificate-authority-data: %s
users:
- name: %s
  user:
    client-certificate-data: %s
    client-key-data: %s
contexts:
- name: kcp
  context:
    cluster: kcp
    user: %s
    namespace: default
current-context: kcp
`, server, b64(caPEM), user, b64(certPEM), b64(keyPEM), user))
}

func adminHTTPClient(p *pkiFiles) (*http.Client, error) {
	cert, err := tls.X509KeyPair(p.adminCertPEM, p.adminKeyPEM)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(p.caPEM)
	return &http.Client{
		Timeout: 5 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{
			RootCAs:      pool,
			Certificates: []tls.Certificate{cert},
		}},
	}, nil
}

func httpOK(hc *http.Client, u string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	resp, err := hc.Do(req)
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, bufio.NewReader(resp.Body))
	return resp.StatusCode == http.StatusOK
}
