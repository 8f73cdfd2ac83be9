`timescale 1ns/1ps
// repq-hw reference RTL: integer LayerNorm of one token with the fused per-channel requantizer
// (docs/ops/layernorm.md, docs/ops/isqrt.md, docs/ops/requantize.md).
//
//   LOAD : the C residual codes x_c (int32, zero point 0) arrive one per clock;
//          S = sum x_c (signed), Q = sum x_c^2
//   STAT : var_n = C*Q - S^2 (= C^2 * variance, exact);  V = var_n + eps_q
//   SQRT : sigma = isqrt(V)                 (rq_isqrt: digit by digit, 32 clocks)
//   NORM : per channel c: d = C*x_c - S; num = d << F
//          norm = (sigma == 0) ? 0 : round_div(num, sigma, mode)   (rq_div_round, DIV_ITER clocks)
//          y    = requantize(norm, M[c], shift[c], offset[c], zp, out_min, out_max, mode)
//          (M[c] signed: a negative gamma' is carried by the multiplier)
//   out_valid pulses once per channel with y (and norm, the Q.F intermediate).
module rq_layernorm_row #(
    parameter integer CMAX     = 1024,
    parameter integer F        = 16,       // frac_bits
    parameter integer DIV_ITER = 48        // |d * 2^F| < 2^(32 + F)
) (
    input  wire               clk,
    input  wire               rst,
    // per-channel requantizer RAMs
    input  wire               prm_we,
    input  wire [15:0]        prm_addr,
    input  wire signed [31:0] prm_mult,
    input  wire [5:0]         prm_shift,
    input  wire signed [63:0] prm_offset,
    // attributes
    input  wire [63:0]        eps_q,
    input  wire signed [31:0] zp,
    input  wire signed [31:0] out_min,
    input  wire signed [31:0] out_max,
    input  wire [1:0]         mode,
    input  wire [15:0]        c_len,
    // stream
    input  wire               in_valid,
    input  wire signed [31:0] x,
    output reg                out_valid,
    output reg  signed [31:0] y,
    output reg  signed [31:0] norm_out,
    output wire               busy
);
    localparam [2:0] S_LOAD = 3'd0, S_STAT = 3'd1, S_SQRT = 3'd2, S_NORM = 3'd3, S_DIVW = 3'd4, S_OUT = 3'd5;
    reg signed [31:0] m_mem [0:CMAX-1];
    reg        [5:0]  s_mem [0:CMAX-1];
    reg signed [63:0] o_mem [0:CMAX-1];
    reg signed [31:0] xbuf  [0:CMAX-1];
    always @(posedge clk) if (prm_we) begin
        m_mem[prm_addr] <= prm_mult;
        s_mem[prm_addr] <= prm_shift;
        o_mem[prm_addr] <= prm_offset;
    end

    reg [2:0]  state;
    reg [15:0] i;
    reg signed [63:0] s_sum;
    reg        [63:0] q_sum;
    reg        [63:0] vtot;
    reg signed [63:0] norm;
    assign busy = (state != S_LOAD) || (i != 16'd0);

    wire signed [63:0] x64  = {{32{x[31]}}, x};
    wire signed [63:0] cc   = {48'd0, c_len};
    wire        [63:0] var_n = cc * q_sum - s_sum * s_sum;

    reg sq_start;
    wire sq_busy, sq_done;
    wire [31:0] sigma;
    rq_isqrt u_sqrt (.clk(clk), .rst(rst), .start(sq_start), .n(vtot), .busy(sq_busy), .done(sq_done),
                     .root(sigma));

    wire signed [63:0] xi  = {{32{xbuf[i][31]}}, xbuf[i]};
    wire signed [63:0] dd  = cc * xi - s_sum;
    wire signed [63:0] num = dd <<< F;
    reg  dv_start;
    wire dv_busy, dv_done;
    wire signed [63:0] dv_q;
    rq_div_round #(.ITER(DIV_ITER)) u_div (.clk(clk), .rst(rst), .start(dv_start), .num(num),
        .den({32'd0, sigma}), .mode(mode), .busy(dv_busy), .done(dv_done), .result(dv_q));

    // fused requantizer on the normalised value
    wire signed [63:0] m64 = {{32{m_mem[i][31]}}, m_mem[i]};
    wire signed [63:0] rv  = norm * m64 + o_mem[i];
    wire signed [31:0] y_c;
    rq_requant_core u_rq (.v(rv), .shift(s_mem[i]), .mode(mode), .zp(zp), .out_min(out_min),
                          .out_max(out_max), .y(y_c));

    always @(posedge clk) begin
        if (rst) begin
            state <= S_LOAD;
            i <= 16'd0;
            s_sum <= 64'sd0;
            q_sum <= 64'd0;
            out_valid <= 1'b0;
            sq_start <= 1'b0;
            dv_start <= 1'b0;
        end else begin
            out_valid <= 1'b0;
            sq_start <= 1'b0;
            dv_start <= 1'b0;
            case (state)
                S_LOAD: if (in_valid) begin
                    xbuf[i] <= x;
                    s_sum <= s_sum + x64;
                    q_sum <= q_sum + x64 * x64;
                    if (i == c_len - 16'd1) begin
                        i <= 16'd0;
                        state <= S_STAT;
                    end else
                        i <= i + 16'd1;
                end
                S_STAT: begin
                    vtot <= var_n + eps_q;
                    sq_start <= 1'b1;
                    state <= S_SQRT;
                end
                S_SQRT: if (sq_done) state <= S_NORM;
                S_NORM: begin
                    if (sigma == 32'd0) begin
                        norm <= 64'sd0;
                        state <= S_OUT;
                    end else begin
                        dv_start <= 1'b1;
                        state <= S_DIVW;
                    end
                end
                S_DIVW: if (dv_done) begin
                    norm <= dv_q;
                    state <= S_OUT;
                end
                S_OUT: begin
                    out_valid <= 1'b1;
                    y <= y_c;
                    norm_out <= norm[31:0];
                    if (i == c_len - 16'd1) begin
                        i <= 16'd0;
                        s_sum <= 64'sd0;
                        q_sum <= 64'd0;
                        state <= S_LOAD;
                    end else begin
                        i <= i + 16'd1;
                        state <= S_NORM;
                    end
                end
                default: state <= S_LOAD;
            endcase
        end
    end
endmodule
